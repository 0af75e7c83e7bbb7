import Foundation

/// Settings the systemd units give through /etc/hydra/hydra.env (EnvironmentFile=) rather than
/// argv, so that a node's addresses and files change without a drop-in. A flag on the command
/// line still wins; an empty variable counts as unset, so `HYDRA_CONSOLE_LISTEN=` turns the console off.
public enum EnvironmentSettings {
    /// The coordinator's /metrics and /healthz address.
    public static let metricsListen = "HYDRA_METRICS_LISTEN"
    /// The coordinator's web console address (off when unset).
    public static let consoleListen = "HYDRA_CONSOLE_LISTEN"
    /// The agent's services YAML (`services_endpoints:`).
    public static let services = "HYDRA_SERVICES"
    /// The agent's /metrics and /healthz address.
    public static let agentListen = "HYDRA_AGENT_LISTEN"

    public static func value(_ name: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        guard let v = environment[name]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
        return v
    }
}
