import ArgumentParser
import Foundation

/// Runs a command tree with Hydra's exit codes: 0 ok, 1 operation failed,
/// 2 usage or invalid input (ArgumentParser's own default for those is 64).
public func runCommandLine(_ root: any ParsableCommand.Type) -> Never {
    do {
        var command = try root.parseAsRoot()
        try command.run()
        exit(0)
    } catch {
        let code = root.exitCode(for: error)
        let message = root.fullMessage(for: error)
        if code == .success {
            if !message.isEmpty { print(message) }
            exit(0)
        }
        if !message.isEmpty {
            FileHandle.standardError.write(Data((message + "\n").utf8))
        }
        exit(code == .validationFailure ? 2 : code.rawValue)
    }
}

/// Blocks until SIGTERM or SIGINT arrives (the service commands' main thread), or until `group`
/// has ended by itself (a service failed: the process should stop rather than idle without it).
public func waitForTermination(orEndOf group: ServiceGroup? = nil) {
    let sem = DispatchSemaphore(value: 0)
    group?.whenFinished { sem.signal() }
    signal(SIGTERM, SIG_IGN)
    signal(SIGINT, SIG_IGN)
    let q = DispatchQueue(label: "signals")
    let sources = [SIGTERM, SIGINT].map { sig -> DispatchSourceSignal in
        let s = DispatchSource.makeSignalSource(signal: sig, queue: q)
        s.setEventHandler { sem.signal() }
        s.resume()
        return s
    }
    sem.wait()
    withExtendedLifetime(sources) {}
}
