import ArgumentParser
import Foundation
import HydraCore
import HydraExecutors

/// Where this node's services (ComfyUI, TabbyAPI, Ollama, GPT-SoVITS, scorer) listen.
struct ServiceOptions: ParsableArguments {
    @Option(name: .customLong("services"),
            help: "YAML with this node's service endpoints (`services_endpoints:`; see docs/executors.md; default: $HYDRA_SERVICES).")
    var servicesFlag: String?
    /// The flag, else HYDRA_SERVICES (what the unit sets through /etc/hydra/hydra.env).
    var services: String? { servicesFlag ?? EnvironmentSettings.value(EnvironmentSettings.services) }
    @Option(name: .customLong("workflows-dir"), help: "Directory of named ComfyUI workflow templates.")
    var workflowsDir: String?

    var endpoints: ServiceEndpoints? {
        guard let services, let text = try? ConfigLoader.readFile(services) else { return nil }
        return try? ServiceEndpoints.parse(yaml: text, file: services)
    }

    /// sleep and command always; the service kinds whose endpoints are configured.
    func executors(command: CommandExecutor) throws -> [String: any Executor] {
        var out: [String: any Executor] = ["sleep": SleepExecutor(), "command": command]
        if let services {
            let endpoints: ServiceEndpoints
            do { endpoints = try ServiceEndpoints.parse(yaml: try ConfigLoader.readFile(services), file: services) } catch {
                throw ValidationError("\(error)")
            }
            for (k, v) in makeServiceExecutors(endpoints, workflowsDirectory: workflowsDirectory) { out[k] = v }
        }
        return out
    }

    var workflowsDirectory: String? {
        if let workflowsDir { return workflowsDir }
        for d in ["/usr/local/share/hydra/workflows", "deploy/workflows"] where FileManager.default.fileExists(atPath: d) { return d }
        return nil
    }
}

/// How `command` jobs run on this node: the cluster file's node entry, plus these flags.
struct CommandOptions: ParsableArguments {
    @Option(name: .customLong("allow-command"),
            help: "Allow this argv template for `command` jobs, e.g. '/usr/bin/rsync -a {path} {path}' (repeatable; adds to the cluster file's command_allowlist).")
    var allowCommand: [String] = []
    @Option(name: .customLong("command-env"), help: "Allow `command` jobs to set this spec env variable (repeatable; adds to command_env).")
    var commandEnv: [String] = []
    @Option(name: .customLong("command-user"), help: "Run `command` jobs as this user (overrides command_user; install-node.sh creates hydra-job).")
    var commandUser: String?

    func executor(node: NodeConfig?) throws -> CommandExecutor {
        do {
            let templates = try (node?.commandAllowlist ?? []) + allowCommand.map { a in
                do { return try CommandTemplate(parsing: a) } catch { throw CommandTemplateError("--allow-command '\(a)': \(error)") }
            }
            let user = try (commandUser ?? node?.commandUser).map { try CommandUser.lookup($0) }
            if let user, geteuid() != 0, let missing = Self.missingCapabilities(), !missing.isEmpty {
                // Found now, not as a failed chown or setpriv on every job.
                throw CommandTemplateError("--command-user \(user.name) needs root or \(missing.joined(separator: ", ")) "
                                           + "(hydra-agent.service grants them as AmbientCapabilities=)")
            }
            return try CommandExecutor(allowlist: templates, envAllowlist: (node?.commandEnv ?? []) + commandEnv, user: user)
        } catch let e as CommandTemplateError {
            throw ValidationError("\(e)")
        }
    }

    /// The capabilities switching users takes that this process lacks (CapEff in /proc/self/status);
    /// nil when it cannot tell.
    static func missingCapabilities() -> [String]? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
              let eff = UInt64(line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16) else { return nil }
        let needed: [(String, UInt64)] = [("CAP_CHOWN", 0), ("CAP_KILL", 5), ("CAP_SETGID", 6), ("CAP_SETUID", 7)]
        return needed.filter { eff & (1 << $0.1) == 0 }.map(\.0)
    }
}
