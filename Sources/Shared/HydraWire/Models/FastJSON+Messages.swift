import HydraCore
/// Hand-written JSON for the two messages on the hot path: envelopes (coordinator → agent)
/// and attempt results (agent → coordinator). The bytes are those of `JSONCoding.encodeString`
/// — keys in UTF-8 order, nil optionals omitted as the synthesized Codable does — because
/// signatures cover the exact body text and old and new agents must interoperate. Decoding
/// takes what the synthesized Decodable takes (missing or null optionals are nil, unknown keys
/// are skipped, the first of duplicate keys wins) and refuses wrong types. Integer fields are
/// read exactly; JSONDecoder also takes some that only fit through rounding (9.2e18, -1e-400).

extension Envelope {
    /// The JSON text, byte-identical to `JSONCoding.encodeString(self)`. Throws where
    /// JSONEncoder throws: a non-finite number, or a spec nested 511 levels deep.
    public func jsonString() throws(JSONWriteError) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(1024)
        try write(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    public func write(to out: inout [UInt8]) throws(JSONWriteError) {
        FastJSON.append(#"{"attempt":"#, &out)
        FastJSON.integer(attempt, into: &out)
        if let deadline {
            FastJSON.append(#","deadline":"#, &out)
            try FastJSON.double(deadline, into: &out)
        }
        if let expiresAt {
            FastJSON.append(#","expires_at":"#, &out)
            try FastJSON.double(expiresAt, into: &out)
        }
        FastJSON.append(#","gpu_uuids":["#, &out)
        for (n, g) in gpuUUIDs.enumerated() {
            if n > 0 { out.append(UInt8(ascii: ",")) }
            FastJSON.string(g, into: &out)
        }
        FastJSON.append(#"],"issued_at":"#, &out)
        try FastJSON.double(issuedAt, into: &out)
        FastJSON.append(#","job_id":"#, &out)
        FastJSON.string(jobID, into: &out)
        FastJSON.append(#","kind":"#, &out)
        FastJSON.string(kind, into: &out)
        if let node {
            FastJSON.append(#","node":"#, &out)
            FastJSON.string(node, into: &out)
        }
        FastJSON.append(#","spec":"#, &out)
        try FastJSON.write(spec, into: &out, depth: 1)
        FastJSON.append(#","v":"#, &out)
        FastJSON.integer(v, into: &out)
        FastJSON.append(#","vram_bytes":"#, &out)
        FastJSON.integer(vramBytes, into: &out)
        out.append(UInt8(ascii: "}"))
    }

    /// Decodes what `JSONCoding.decode(Envelope.self, from:)` decodes, to an equal value.
    public static func parse(_ text: String) throws(JSONParseError) -> Envelope {
        try FastJSON.withBytes(of: text) { (b) throws(JSONParseError) in try read(b, trustedUTF8: true) }
    }

    /// UTF-8 bytes; invalid UTF-8 inside strings is refused.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(JSONParseError) -> Envelope {
        try read(bytes, trustedUTF8: false)
    }

    static func read(_ bytes: UnsafeRawBufferPointer, trustedUTF8: Bool) throws(JSONParseError) -> Envelope {
        var r = JSONReader(bytes, trustedUTF8: trustedUTF8)
        let start = r.i
        var v: Int?, jobID: String?, attempt: Int?, kind: String?, spec: JSONValue?, gpus: [String]?
        var vram: UInt64?, issuedAt: Double?, deadline: Double??, expiresAt: Double??, node: String??
        var more = try r.beginObject()
        while more {
            let key = try r.memberKey()
            // `where … == nil`: the first of duplicate keys wins; later ones are read and dropped.
            switch key {
            case "v" where v == nil: v = try r.intField(key)
            case "job_id" where jobID == nil: jobID = try r.stringField(key)
            case "attempt" where attempt == nil: attempt = try r.intField(key)
            case "kind" where kind == nil: kind = try r.stringField(key)
            case "spec" where spec == nil: spec = try r.value()
            case "gpu_uuids" where gpus == nil: gpus = try r.stringArrayField(key)
            case "vram_bytes" where vram == nil: vram = try r.uint64Field(key)
            case "issued_at" where issuedAt == nil: issuedAt = try r.doubleField(key)
            case "deadline" where deadline == nil: deadline = .some(try r.optionalDoubleField(key))
            case "expires_at" where expiresAt == nil: expiresAt = .some(try r.optionalDoubleField(key))
            case "node" where node == nil: node = .some(try r.optionalStringField(key))
            default: try r.skipUndecoded()
            }
            more = try r.nextMember()
        }
        try r.finish()
        func missing(_ k: String) -> JSONParseError { r.error("missing key \"\(k)\" in an envelope", at: start) }
        guard let v else { throw missing("v") }
        guard let jobID else { throw missing("job_id") }
        guard let attempt else { throw missing("attempt") }
        guard let kind else { throw missing("kind") }
        guard let spec else { throw missing("spec") }
        guard let gpus else { throw missing("gpu_uuids") }
        guard let vram else { throw missing("vram_bytes") }
        guard let issuedAt else { throw missing("issued_at") }
        return Envelope(v: v, jobID: jobID, attempt: attempt, kind: kind, spec: spec, gpuUUIDs: gpus, vramBytes: vram,
                        deadline: deadline ?? nil, issuedAt: issuedAt, expiresAt: expiresAt ?? nil, node: node ?? nil)
    }
}

extension AttemptResult {
    /// The JSON text, byte-identical to `JSONCoding.encodeString(self)`. Throws where
    /// JSONEncoder throws: a non-finite number, or a result nested 511 levels deep.
    public func jsonString() throws(JSONWriteError) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        try write(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    public func write(to out: inout [UInt8]) throws(JSONWriteError) {
        FastJSON.append(#"{"attempt":"#, &out)
        FastJSON.integer(attempt, into: &out)
        if let durationSeconds {
            FastJSON.append(#","duration_s":"#, &out)
            try FastJSON.double(durationSeconds, into: &out)
        }
        if let error {
            FastJSON.append(#","error":"#, &out)
            FastJSON.string(error, into: &out)
        }
        if let failureClass {
            FastJSON.append(#","failure_class":"#, &out)
            FastJSON.string(failureClass.rawValue, into: &out)
        }
        if let finishedAt {
            FastJSON.append(#","finished_at":"#, &out)
            try FastJSON.double(finishedAt, into: &out)
        }
        FastJSON.append(#","job_id":"#, &out)
        FastJSON.string(jobID, into: &out)
        FastJSON.append(#","node":"#, &out)
        FastJSON.string(node, into: &out)
        FastJSON.append(#","outcome":"#, &out)
        FastJSON.string(outcome.rawValue, into: &out)
        if let peakVRAMBytes {
            FastJSON.append(#","peak_vram_bytes":"#, &out)
            FastJSON.integer(peakVRAMBytes, into: &out)
        }
        if let result {
            FastJSON.append(#","result":"#, &out)
            try FastJSON.write(result, into: &out, depth: 1)
        }
        if let startedAt {
            FastJSON.append(#","started_at":"#, &out)
            try FastJSON.double(startedAt, into: &out)
        }
        out.append(UInt8(ascii: "}"))
    }

    /// Decodes what `JSONCoding.decode(AttemptResult.self, from:)` decodes, to an equal value
    /// (so `"result": null` is nil, as decodeIfPresent makes it).
    public static func parse(_ text: String) throws(JSONParseError) -> AttemptResult {
        try FastJSON.withBytes(of: text) { (b) throws(JSONParseError) in try read(b, trustedUTF8: true) }
    }

    /// UTF-8 bytes; invalid UTF-8 inside strings is refused.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(JSONParseError) -> AttemptResult {
        try read(bytes, trustedUTF8: false)
    }

    static func read(_ bytes: UnsafeRawBufferPointer, trustedUTF8: Bool) throws(JSONParseError) -> AttemptResult {
        var r = JSONReader(bytes, trustedUTF8: trustedUTF8)
        let start = r.i
        var jobID: String?, attempt: Int?, node: String?, outcome: AttemptOutcome?
        var failureClass: FailureClass??, error: String??, result: JSONValue??
        var startedAt: Double??, finishedAt: Double??, duration: Double??, peak: UInt64??
        var more = try r.beginObject()
        while more {
            let key = try r.memberKey()
            switch key {
            case "job_id" where jobID == nil: jobID = try r.stringField(key)
            case "attempt" where attempt == nil: attempt = try r.intField(key)
            case "node" where node == nil: node = try r.stringField(key)
            case "outcome" where outcome == nil:
                let at = r.i
                let raw = try r.stringField(key)
                guard let o = AttemptOutcome(rawValue: raw) else { throw r.error("unknown outcome \"\(raw.prefix(40))\"", at: at) }
                outcome = o
            case "failure_class" where failureClass == nil:
                let at = r.i
                if let raw = try r.optionalStringField(key) {
                    guard let f = FailureClass(rawValue: raw) else { throw r.error("unknown failure_class \"\(raw.prefix(40))\"", at: at) }
                    failureClass = .some(f)
                } else {
                    failureClass = .some(nil)
                }
            case "error" where error == nil: error = .some(try r.optionalStringField(key))
            case "result" where result == nil: result = .some(try r.optionalValue())
            case "started_at" where startedAt == nil: startedAt = .some(try r.optionalDoubleField(key))
            case "finished_at" where finishedAt == nil: finishedAt = .some(try r.optionalDoubleField(key))
            case "duration_s" where duration == nil: duration = .some(try r.optionalDoubleField(key))
            case "peak_vram_bytes" where peak == nil:
                if r.peek() == UInt8(ascii: "n") { try r.literal("null"); peak = .some(nil) } else { peak = .some(try r.uint64Field(key)) }
            default: try r.skipUndecoded()
            }
            more = try r.nextMember()
        }
        try r.finish()
        func missing(_ k: String) -> JSONParseError { r.error("missing key \"\(k)\" in an attempt result", at: start) }
        guard let jobID else { throw missing("job_id") }
        guard let attempt else { throw missing("attempt") }
        guard let node else { throw missing("node") }
        guard let outcome else { throw missing("outcome") }
        return AttemptResult(jobID: jobID, attempt: attempt, node: node, outcome: outcome, failureClass: failureClass ?? nil,
                             error: error ?? nil, result: result ?? nil, startedAt: startedAt ?? nil, finishedAt: finishedAt ?? nil,
                             durationSeconds: duration ?? nil, peakVRAMBytes: peak ?? nil)
    }
}
