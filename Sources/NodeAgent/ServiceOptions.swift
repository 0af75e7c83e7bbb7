import ArgumentParser
import Foundation
import Shared

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
    func executors(allowlist: [String]) throws -> [String: any Executor] {
        var out: [String: any Executor] = ["sleep": SleepExecutor(), "command": CommandExecutor(allowlist: allowlist)]
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
