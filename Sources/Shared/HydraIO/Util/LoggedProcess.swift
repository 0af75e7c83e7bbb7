import Foundation

extension Process {
    /// Starts a long-running child whose stdout and stderr both go to `log` (created empty):
    /// how tests, benchmarks and local clusters run `hydra` and `hydra-agent`.
    public static func startLogged(_ executable: URL, _ arguments: [String], environment: [String: String], log: URL) throws -> Process {
        let p = Process()
        p.executableURL = executable
        p.arguments = arguments
        p.environment = environment
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let h = try FileHandle(forWritingTo: log)
        p.standardOutput = h
        p.standardError = h
        try p.run()
        return p
    }
}
