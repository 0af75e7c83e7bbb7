import Foundation

// libFuzzer entry point for the nvidia-smi CSV parser (built with Fuzz/run.sh). A crash or a
// rejection that is not NvidiaSMIError.unparsable with a message ends the run with the input saved.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNvidiaSMICSV(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    for parse in [{ _ = try NvidiaSMICSV.parseGPUs($0) }, { _ = try NvidiaSMICSV.parseProcesses($0) }] as [(String) throws -> Void] {
        do { try parse(text) } catch let e as NvidiaSMIError {
            guard case .unparsable(let why) = e, !why.isEmpty else { fatalError("unexpected rejection: \(e)") }
        } catch { fatalError("untyped error: \(error)") }
    }
    return 0
}
