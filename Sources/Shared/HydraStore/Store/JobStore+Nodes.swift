import Foundation
import HydraCore
import HydraWire

/// The node table: what heartbeats said, up/down, draining.
extension JobStore {
    public func upsertNodes(_ nodes: [NodeRow]) throws {
        for n in nodes {
            try db.exec("""
                INSERT INTO nodes (name, last_seen, up, agent_version, inventory, running, commands, gpu_sample_age_s)
                VALUES ($1, to_timestamp($2::float8), $3::boolean, $4, $5::jsonb, $6::jsonb, $7::jsonb, $8::float8)
                ON CONFLICT (name) DO UPDATE SET last_seen = coalesce(EXCLUDED.last_seen, nodes.last_seen), up = EXCLUDED.up,
                    agent_version = coalesce(EXCLUDED.agent_version, nodes.agent_version),
                    inventory = coalesce(EXCLUDED.inventory, nodes.inventory), running = EXCLUDED.running,
                    commands = CASE WHEN EXCLUDED.up THEN EXCLUDED.commands ELSE nodes.commands END,
                    gpu_sample_age_s = CASE WHEN EXCLUDED.up THEN EXCLUDED.gpu_sample_age_s ELSE nodes.gpu_sample_age_s END
                """, [n.name, n.lastSeen.map { String($0) }, n.up ? "true" : "false", n.agentVersion,
                      n.up ? try JSONCoding.encodeString(n.inventory) : nil, try JSONCoding.encodeString(n.running),
                      try n.commands.map { try JSONCoding.encodeString($0) }, n.gpuSampleAgeS.map { String($0) }])
        }
    }

    public func markNodesDown(except live: [String]) throws {
        try db.exec("UPDATE nodes SET up = false, running = '[]'::jsonb WHERE up AND NOT (name = ANY($1::text[]))", [PGConnection.textArray(live)])
    }

    public func nodes() throws -> [NodeRow] {
        try db.exec("""
            SELECT name, extract(epoch from last_seen) AS last_seen, up, draining, agent_version, inventory, running, commands,
                   gpu_sample_age_s FROM nodes ORDER BY name
            """).all.map { r in
            let inv = r["inventory"].flatMap { try? JSONCoding.decode(Inventory.self, from: $0) } ?? Inventory()
            let running = r["running"].flatMap { try? JSONCoding.decode([String].self, from: $0) } ?? []
            return NodeRow(name: r["name"] ?? "", lastSeen: r.double("last_seen"), up: r.bool("up") ?? false,
                           draining: r.bool("draining") ?? false, agentVersion: r["agent_version"], inventory: inv, running: running,
                           commands: r["commands"].flatMap { try? JSONCoding.decode([[String]].self, from: $0) },
                           gpuSampleAgeS: r.double("gpu_sample_age_s"))
        }
    }

    public func setDraining(node: String, _ draining: Bool) throws -> Bool {
        try db.exec("UPDATE nodes SET draining = $2::boolean WHERE name = $1", [node, draining ? "true" : "false"]).affected == 1
    }
}
