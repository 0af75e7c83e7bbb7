import Foundation

/// What a job kind needs when neither its spec nor the learned statistics say.
public enum KindDefaults {
    /// VRAM per GPU.
    public static func vramBytes(kind: String) -> UInt64 {
        let g = ByteSize.GiB
        switch kind {
        case "image": return 8 * g
        case "llm": return 10 * g
        case "tts", "voice": return 4 * g
        case "score": return 2 * g
        case "lora": return 14 * g
        case "video": return 12 * g
        case "sleep": return 0
        default: return 4 * g
        }
    }

    /// The most seconds a spec's `duration_s` or `base_runtime_s` may say (about 31 years): batch files
    /// refuse more (`BatchFile.checkSeconds`), so queue sums over a whole backlog stay finite.
    public static let maxSeconds = 1e9

    /// A spec's seconds field as the router reads it: nil (so the kind's default) unless a finite
    /// number from 0 to `maxSeconds`. Batch files refuse anything else, but a row stored before that
    /// check, or written by other means, must not turn every cost beside it into NaN.
    public static func seconds(_ v: JSONValue?) -> Double? {
        guard let d = v?.doubleValue, d.isFinite, d >= 0, d <= maxSeconds else { return nil }
        return d
    }

    /// Runtime on a GPU of weight 1 (a CPU-only job: its runtime).
    public static func baseRuntimeS(kind: String) -> Double {
        switch kind {
        case "image": return 180      // ~30 s on an RTX 5070 Ti (weight 6)
        case "llm": return 60
        case "tts", "voice": return 30
        case "score": return 10
        case "lora": return 7200
        case "video": return 1800
        case "sleep": return 1
        default: return 60
        }
    }

    /// Services a kind calls; a job runs only on a node that has one of them.
    public static func services(kind: String) -> [String] {
        switch kind {
        case "image": return comfy
        case "llm": return llm
        case "tts", "voice": return tts
        case "score": return scorer
        case "lora": return lora
        default: return []
        }
    }
    private static let comfy = ["comfyui"], llm = ["tabbyapi", "ollama"], tts = ["gpt-sovits"]
    private static let scorer = ["scorer"], lora = ["lora-trainer"]
}

/// The part of a job that decides where it may go. Jobs with equal shapes see the
/// same filter results, so filters run once per shape, not once per job.
struct DemandShape: Hashable, Sendable {
    var cpuOnly: Bool
    var gpus: Int
    var needBytes: UInt64
    /// Any of these (empty: no service needed).
    var services: [String]
    var nodeSelector: String?
    /// Substring of the GPU model, case-insensitive.
    var gpuModelSelector: String?
    var gpuIndexSelector: Int?
    /// The seed's fixed GPU model for this job (seed-static only).
    var seedTarget: String?
    /// A `command` job's argv (nil for other kinds, or an argv that is not a list of strings, which
    /// the agent refuses anyway): it may go only to a node whose command allowlist matches it.
    var command: [String]? = nil
}

/// Everything the router derives from one pending job.
struct JobDemand: Sendable {
    var shape: DemandShape
    var kind: String
    var modelKey: String
    /// Fixed runtime regardless of GPU (`spec.duration_s`, e.g. sleep jobs).
    var durationS: Double?
    /// Runtime at weight 1.
    var baseRuntimeS: Double
    /// At or above the policy's urgent priority: starting now counts more than the GPU's speed.
    var urgent: Bool
    /// Only a few GPUs can run it (`ScarceGPUs`): it pays no charge for their contested work.
    var scarce = false
    /// Scarce by GPU count, not only pressed by load (`ScarceGPUs`): ranks with the most-aged job of its priority.
    var fewGPUs = false

    init(job: borrowing RouterJob, stats: RuntimeStats, policy: RouterPolicy) {
        kind = lowerASCII(job.kind)
        urgent = job.priority >= policy.urgentPriority
        let spec = SpecFields(job.spec)
        modelKey = spec.model?.stringValue.map(lowerASCII) ?? ""
        let explicit = job.vramRequestBytes ?? 0
        let cpuOnly = job.cpuOnly
        var need: UInt64 = 0
        if !cpuOnly {
            if explicit > 0 {
                need = explicit
            } else if let p = stats.peakVRAM(kind: kind, modelKey: modelKey) {
                need = p
            } else {
                need = KindDefaults.vramBytes(kind: kind)
            }
            if job.lastFailure == .oom {
                // The failed attempt proved its reservation too small: grow from whichever is larger.
                let base = max(need, job.lastReservedBytes ?? 0)
                need = Self.roundUp(UInt64((Double(base) * policy.oomGrowth).rounded(.up)))
            }
        }
        durationS = KindDefaults.seconds(spec.durationS)
        baseRuntimeS = KindDefaults.seconds(spec.baseRuntimeS) ?? KindDefaults.baseRuntimeS(kind: kind)

        let c = job.constraints
        var services: [String]
        if let s = Self.strings(c?["service"]) {
            services = s
        } else if let s = Self.strings(spec.service) {
            services = s
        } else if kind == "llm", let e = spec.endpoint?.stringValue, !e.isEmpty {
            // The LLM executor calls the endpoint the spec names; only its node can run the job.
            services = [e]
        } else {
            services = KindDefaults.services(kind: kind)   // static arrays: no allocation
        }
        // Mapped only when one needs it: the map allocates a new array for every job.
        if !services.allSatisfy(isLowerASCII) { services = services.map(lowerASCII) }
        let gpuIndex = c?["gpu_index"]?.intValue
        shape = DemandShape(cpuOnly: cpuOnly, gpus: cpuOnly ? 0 : max(1, job.gpusRequested), needBytes: need,
                            services: services, nodeSelector: c?["node"]?.stringValue,
                            gpuModelSelector: c?["gpu_model"]?.stringValue?.lowercased(), gpuIndexSelector: gpuIndex,
                            seedTarget: policy.name == .seedStatic ? SeedStaticRuleFilter.target(kind: kind, modelKey: modelKey, spec: job.spec) : nil)
        if kind == "command", let a = spec.argv?.arrayValue, !a.isEmpty {
            var argv: [String] = []
            argv.reserveCapacity(a.count)
            for v in a { if let s = v.stringValue { argv.append(s) } }
            if argv.count == a.count { shape.command = argv }
        }
    }

    /// The spec entries a demand reads. A small spec is walked once instead of looked up five
    /// times: each `spec[key]` hashes its key, and for a 10 000-job pass those hashes showed
    /// in the profile. Same values either way (keys compare as the dictionary compares them).
    struct SpecFields {
        var model: JSONValue?, durationS: JSONValue?, baseRuntimeS: JSONValue?, service: JSONValue?, endpoint: JSONValue?
        var argv: JSONValue?

        init(_ spec: JSONValue) {
            guard case .object(let o) = spec else { return }
            guard o.count <= 8 else {
                model = o["model"]; durationS = o["duration_s"]; baseRuntimeS = o["base_runtime_s"]
                service = o["service"]; endpoint = o["endpoint"]; argv = o["argv"]
                return
            }
            for (k, v) in o {
                switch k {
                case "model": model = v
                case "duration_s": durationS = v
                case "base_runtime_s": baseRuntimeS = v
                case "service": service = v
                case "endpoint": endpoint = v
                case "argv": argv = v
                default: break
                }
            }
        }
    }

    static func strings(_ v: JSONValue?) -> [String]? {
        guard let v else { return nil }
        if let s = v.stringValue { return [s] }
        if let a = v.arrayValue { return a.compactMap(\.stringValue) }
        return nil
    }

    /// Estimates land on 256 MiB steps: nicer in reasons, no practical loss.
    static func roundUp(_ b: UInt64) -> UInt64 {
        let step = 256 * ByteSize.MiB
        return (b + step - 1) / step * step
    }
}

/// `lowercased()` allocates even for text that is already lower case, which job kinds and
/// model names nearly always are.
func lowerASCII(_ s: String) -> String {
    isLowerASCII(s) ? s : s.lowercased()
}

/// ASCII with no capital letter. Over the UTF-8 bytes in place: iterating `s.utf8` cost about
/// 280 instructions per short string, four times per job in a pass.
@inline(__always)
func isLowerASCII(_ s: String) -> Bool {
    @inline(__always) func capitalOrWide(_ b: UInt8) -> Bool { (b >= 65 && b <= 90) || b >= 128 }
    return s.utf8.withContiguousStorageIfAvailable { !$0.contains(where: capitalOrWide) } ?? !s.utf8.contains(where: capitalOrWide)
}
