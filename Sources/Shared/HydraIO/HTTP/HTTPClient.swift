import Foundation
import CCurl
import HydraCore

/// libcurl wants `curl_global_init` once per process before any other thread
/// uses it; a global `let` is initialised exactly once, thread-safely, on first use.
private let curlGlobalInit: CURLcode = curl_global_init(Int(CURL_GLOBAL_DEFAULT))

/// One HTTP request as the executors build it.
public struct HTTPClientRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [String: String]
    public var body: Data?
    /// Safe to send twice. GET/HEAD are by default; a POST only when the caller
    /// knows the service treats it as a pure function (the scorer), never /prompt.
    public var idempotent: Bool

    public init(method: String = "GET", url: String, headers: [String: String] = [:], body: Data? = nil, idempotent: Bool? = nil) {
        self.method = method.uppercased(); self.url = url; self.headers = headers; self.body = body
        self.idempotent = idempotent ?? ["GET", "HEAD", "OPTIONS"].contains(method.uppercased())
    }

    /// A request with a JSON body (sorted keys, so fakes and logs see stable bytes).
    public static func json(_ method: String = "POST", url: String, body: JSONValue, headers: [String: String] = [:],
                            idempotent: Bool? = nil) -> HTTPClientRequest {
        var h = headers
        h["Content-Type"] = "application/json"
        let data = (try? JSONCoding.encoder().encode(body)) ?? Data("null".utf8)
        return HTTPClientRequest(method: method, url: url, headers: h, body: data, idempotent: idempotent)
    }
}

/// Limits for one call. Every executor passes its own; the defaults suit short control calls.
public struct HTTPClientOptions: Sendable {
    public var connectTimeout: Double = 5
    /// Whole exchange, headers to last byte. nil = only the job's deadline bounds it.
    public var totalTimeout: Double? = 120
    /// Longest silence tolerated mid-transfer (a stalled stream or a hung service).
    public var idleTimeout: Double?
    public var maxResponseBytes: Int = 64 << 20
    /// Extra attempts for idempotent requests on refused connections, drops and 5xx.
    public var retries: Int = 2
    public var retryBackoff: Double = 0.2

    public init(connectTimeout: Double = 5, totalTimeout: Double? = 120, idleTimeout: Double? = nil,
                maxResponseBytes: Int = 64 << 20, retries: Int = 2, retryBackoff: Double = 0.2) {
        self.connectTimeout = connectTimeout; self.totalTimeout = totalTimeout; self.idleTimeout = idleTimeout
        self.maxResponseBytes = maxResponseBytes; self.retries = retries; self.retryBackoff = retryBackoff
    }
}

public struct HTTPClientResponse: Sendable {
    public var service: String
    public var method: String
    public var url: String
    public var status: Int
    /// Header names lower-cased; the last value wins.
    public var headers: [String: String]
    public var body: Data

    public var isSuccess: Bool { (200..<300).contains(status) }
    public var text: String { String(decoding: body, as: UTF8.self) }
    public func json() throws -> JSONValue { try JSONDecoder().decode(JSONValue.self, from: body) }
    public var jsonValue: JSONValue? { try? json() }

    /// "comfyui: POST http://…/prompt → HTTP 500: Internal Server Error" (the body as an `Excerpt`
    /// of 300 characters: one line, and a binary body only named).
    public var summary: String {
        let snippet = excerpt(300)
        return "\(service): \(method) \(url) → HTTP \(status)" + (snippet.isEmpty ? "" : ": \(snippet)")
    }

    /// The start of the body, fit to quote in an error message (`Excerpt`).
    public func excerpt(_ limit: Int = 200) -> String { Excerpt.of(body, limit: limit) }
}

public struct HTTPClientError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Kind: String, Sendable, Equatable {
        /// Refused, unreachable, DNS: the service is not there (yet).
        case connect
        /// The client's own total timeout.
        case timeout
        /// The job's deadline cut the transfer.
        case deadline
        /// No byte for longer than the idle timeout.
        case idle
        case tooLarge = "too_large"
        case cancelled
        /// The peer closed the connection early (stream cut, empty reply).
        case dropped
        /// The line callback threw; `detail` holds its message.
        case callback
        case transport
    }
    public var service: String
    public var method: String
    public var url: String
    public var kind: Kind
    public var detail: String

    public var description: String { "\(service): \(method) \(url): \(detail)" }

    /// The failure class an executor reports when a transfer itself fails.
    public var executionFailure: ExecutionFailure {
        switch kind {
        case .deadline: return ExecutionFailure(.timeout, description)
        case .tooLarge: return ExecutionFailure(.permanent, description)
        default: return ExecutionFailure(.transient, description)
        }
    }
}

/// Blocking HTTP client over libcurl, one easy handle per call. Called from job
/// threads (never from Swift concurrency threads): curl_easy_perform blocks.
public struct HTTPClient: Sendable {
    /// Named in every error and summary so an operator knows which service failed.
    public var service: String
    public var defaultHeaders: [String: String]
    public var options: HTTPClientOptions

    public init(service: String, defaultHeaders: [String: String] = [:], options: HTTPClientOptions = HTTPClientOptions()) {
        self.service = service; self.defaultHeaders = defaultHeaders; self.options = options
    }

    /// Sends a request and buffers the body. Any HTTP status comes back as a
    /// response (callers read error bodies); transfer failures throw `HTTPClientError`.
    /// Idempotent requests are retried with backoff on connect failures, drops and 5xx.
    public func send(_ request: HTTPClientRequest, options: HTTPClientOptions? = nil, deadline: Date? = nil,
                     cancellation: CancellationFlag? = nil) throws -> HTTPClientResponse {
        let opts = options ?? self.options
        var attempt = 0
        while true {
            do {
                let r = try perform(request, opts, deadline: deadline, cancellation: cancellation, onLine: nil)
                if request.idempotent, attempt < opts.retries, [500, 502, 503, 504].contains(r.status) {
                    let retryAfter = r.headers["retry-after"].flatMap(Double.init)
                    try backoff(attempt, opts, retryAfter: retryAfter, deadline: deadline, cancellation: cancellation, request)
                    attempt += 1
                    continue
                }
                return r
            } catch let e as HTTPClientError where request.idempotent && attempt < opts.retries
                        && [.connect, .dropped, .transport].contains(e.kind) {
                try backoff(attempt, opts, retryAfter: nil, deadline: deadline, cancellation: cancellation, request)
                attempt += 1
            }
        }
    }

    /// Sends a request whose 2xx body is a line protocol (SSE, NDJSON) and hands
    /// each line, without its `\n` or `\r\n`, to `onLine` as it arrives. `onLine`
    /// returns false to stop reading (the connection is closed). A non-2xx body
    /// is buffered into the returned response instead. Never retried: lines
    /// already delivered cannot be taken back.
    @discardableResult
    public func stream(_ request: HTTPClientRequest, options: HTTPClientOptions? = nil, deadline: Date? = nil,
                       cancellation: CancellationFlag? = nil, onLine: @escaping (String) throws -> Bool) throws -> HTTPClientResponse {
        try perform(request, options ?? self.options, deadline: deadline, cancellation: cancellation, onLine: onLine)
    }

    private func backoff(_ attempt: Int, _ opts: HTTPClientOptions, retryAfter: Double?, deadline: Date?,
                         cancellation: CancellationFlag?, _ request: HTTPClientRequest) throws {
        var wait = min(retryAfter ?? opts.retryBackoff * pow(2, Double(attempt)), 5)
        wait *= Double.random(in: 0.8...1.2)
        let end = Date().addingTimeInterval(wait)
        while Date() < end {
            if cancellation?.isCancelled == true { throw err(request, .cancelled, "cancelled") }
            if let deadline, Date() >= deadline { throw err(request, .deadline, "deadline passed while waiting to retry") }
            Thread.sleep(forTimeInterval: min(0.02, max(0, end.timeIntervalSinceNow)))
        }
    }

    func err(_ r: HTTPClientRequest, _ kind: HTTPClientError.Kind, _ detail: String) -> HTTPClientError {
        HTTPClientError(service: service, method: r.method, url: r.url, kind: kind, detail: detail)
    }

    private func perform(_ request: HTTPClientRequest, _ opts: HTTPClientOptions, deadline: Date?,
                         cancellation: CancellationFlag?, onLine: ((String) throws -> Bool)?) throws -> HTTPClientResponse {
        _ = curlGlobalInit
        if cancellation?.isCancelled == true { throw err(request, .cancelled, "cancelled before sending") }
        var total = opts.totalTimeout
        var deadlineBound = false
        if let deadline {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { throw err(request, .deadline, "deadline passed before sending") }
            if total == nil || left < total! { total = left; deadlineBound = true }
        }
        guard let h = curl_easy_init() else { throw err(request, .transport, "curl_easy_init failed") }
        defer { curl_easy_cleanup(h) }

        let state = TransferState(maxBytes: opts.maxResponseBytes, onLine: onLine, cancellation: cancellation,
                                  idleTimeout: opts.idleTimeout)
        let box = Unmanaged.passRetained(state)
        defer { box.release() }

        _ = hydra_curl_setopt_string(h, CURLOPT_URL, request.url)
        _ = hydra_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        _ = hydra_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, max(1, Int(min(max(opts.connectTimeout, 0), 1e9) * 1000)))
        // Clamped: a spec's timeout is input, and a huge one must not trap the conversion.
        if let total { _ = hydra_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, max(1, Int(min(max(total, 0), 1e9) * 1000))) }
        _ = hydra_curl_setopt_write(h, CURLOPT_WRITEFUNCTION, transferWrite)
        _ = hydra_curl_setopt_pointer(h, CURLOPT_WRITEDATA, box.toOpaque())
        _ = hydra_curl_setopt_write(h, CURLOPT_HEADERFUNCTION, transferHeader)
        _ = hydra_curl_setopt_pointer(h, CURLOPT_HEADERDATA, box.toOpaque())
        _ = hydra_curl_setopt_xferinfo(h, transferProgress)
        _ = hydra_curl_setopt_pointer(h, CURLOPT_XFERINFODATA, box.toOpaque())
        _ = hydra_curl_setopt_long(h, CURLOPT_NOPROGRESS, 0)

        switch request.method {
        case "GET": _ = hydra_curl_setopt_long(h, CURLOPT_HTTPGET, 1)
        case "HEAD": _ = hydra_curl_setopt_long(h, CURLOPT_NOBODY, 1)
        case "POST": _ = hydra_curl_setopt_long(h, CURLOPT_POST, 1)
        default: _ = hydra_curl_setopt_string(h, CURLOPT_CUSTOMREQUEST, request.method)
        }
        if request.body != nil || request.method == "POST" {
            let body = request.body ?? Data()
            _ = hydra_curl_setopt_offt(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
            // COPYPOSTFIELDS copies the bytes, so `body` need not outlive this scope.
            if body.isEmpty {
                _ = hydra_curl_setopt_string(h, CURLOPT_COPYPOSTFIELDS, "")
            } else {
                body.withUnsafeBytes { raw in
                    _ = hydra_curl_setopt_pointer(h, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: raw.baseAddress!))
                }
            }
        }
        var slist: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(slist) }
        var headers = defaultHeaders.merging(request.headers) { _, new in new }
        // Without this curl waits up to 1 s for "100 Continue" on bodies over 1 KiB.
        headers["Expect"] = headers["Expect"] ?? ""
        for (k, v) in headers.sorted(by: { $0.key < $1.key }) {
            slist = curl_slist_append(slist, v.isEmpty ? "\(k):" : "\(k): \(v)")
        }
        _ = hydra_curl_setopt_slist(h, CURLOPT_HTTPHEADER, slist)

        let rc = curl_easy_perform(h)
        var code = 0
        _ = hydra_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &code)

        if rc == CURLE_OK {
            state.flushLastLine()
            if let e = state.callbackError { throw err(request, .callback, "\(e)") }
        } else {
            // Our callbacks set `abort` before returning the value that makes curl stop.
            switch state.abort {
            case .cancelled: throw err(request, .cancelled, "cancelled")
            case .idle: throw err(request, .idle, "no data for \(opts.idleTimeout ?? 0) s (stalled)")
            case .tooLarge: throw err(request, .tooLarge, "response larger than \(opts.maxResponseBytes) bytes")
            case .stoppedByCaller: break
            case .callbackError:
                throw err(request, .callback, state.callbackError.map { "\($0)" } ?? "line handler failed")
            case .none:
                let msg = String(cString: curl_easy_strerror(rc))
                switch rc {
                case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
                    throw err(request, .connect, "cannot connect: \(msg)")
                case CURLE_OPERATION_TIMEDOUT:
                    if deadlineBound { throw err(request, .deadline, "job deadline reached after \(String(format: "%.1f", total ?? 0)) s") }
                    throw err(request, .timeout, "timed out after \(opts.totalTimeout ?? 0) s (\(msg))")
                case CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE, CURLE_RECV_ERROR, CURLE_SEND_ERROR:
                    throw err(request, .dropped, "connection dropped (HTTP \(code), \(state.received) bytes read): \(msg)")
                default:
                    throw err(request, .transport, "\(msg) (curl \(rc.rawValue))")
                }
            }
        }
        return HTTPClientResponse(service: service, method: request.method, url: request.url, status: code,
                                  headers: state.headers, body: state.body)
    }

    /// `?a=1&b=x%20y` with every value percent-encoded for a query component.
    public static func query(_ items: [(String, String)]) -> String {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+?/#")
        let parts = items.map { k, v in
            "\(k.addingPercentEncoding(withAllowedCharacters: allowed) ?? k)=\(v.addingPercentEncoding(withAllowedCharacters: allowed) ?? v)"
        }
        return parts.isEmpty ? "" : "?" + parts.joined(separator: "&")
    }
}

/// Per-transfer state the C callbacks reach through an `Unmanaged` pointer.
/// Not Sendable and needs no lock: curl_easy_perform calls the callbacks on the
/// calling thread, and the object never leaves `perform`.
private final class TransferState {
    enum Abort { case cancelled, idle, tooLarge, stoppedByCaller, callbackError }
    var headers: [String: String] = [:]
    var status = 0
    var body = Data()
    var lineBuffer = Data()
    var received = 0
    var abort: Abort?
    var callbackError: Error?
    let maxBytes: Int
    let onLine: ((String) throws -> Bool)?
    let cancellation: CancellationFlag?
    let idleTimeout: Double?
    var lastActivity = DispatchTime.now().uptimeNanoseconds

    init(maxBytes: Int, onLine: ((String) throws -> Bool)?, cancellation: CancellationFlag?, idleTimeout: Double?) {
        self.maxBytes = maxBytes; self.onLine = onLine; self.cancellation = cancellation; self.idleTimeout = idleTimeout
    }

    var linesMode: Bool { onLine != nil && (200..<300).contains(status) }

    func header(_ line: String) {
        lastActivity = DispatchTime.now().uptimeNanoseconds
        let t = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if t.hasPrefix("HTTP/") {
            // A new status line (after 100 Continue): forget the previous block.
            headers = [:]
            let parts = t.split(separator: " ")
            status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        } else if let colon = t.firstIndex(of: ":") {
            headers[t[..<colon].lowercased()] = t[t.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
    }

    /// Returns false to make curl stop.
    func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        lastActivity = DispatchTime.now().uptimeNanoseconds
        received += bytes.count
        if received > maxBytes { abort = .tooLarge; return false }
        guard linesMode else { body.append(contentsOf: bytes); return true }
        lineBuffer.append(contentsOf: bytes)
        while let nl = lineBuffer.firstIndex(of: 10) {
            var line = lineBuffer[lineBuffer.startIndex..<nl]
            if line.last == 13 { line = line.dropLast() }
            let s = String(decoding: line, as: UTF8.self)
            lineBuffer = Data(lineBuffer[(nl + 1)...])
            if !deliver(s) { return false }
        }
        return true
    }

    func deliver(_ line: String) -> Bool {
        do {
            if try onLine?(line) == false { abort = .stoppedByCaller; return false }
            return true
        } catch {
            callbackError = error; abort = .callbackError
            return false
        }
    }

    /// NDJSON servers may end the last line without `\n`.
    func flushLastLine() {
        guard linesMode, !lineBuffer.isEmpty, abort == nil else { return }
        var line = lineBuffer
        if line.last == 13 { line = line.dropLast() }
        lineBuffer = Data()
        _ = deliver(String(decoding: line, as: UTF8.self))
    }

    /// Non-zero aborts the transfer.
    func progress() -> Int32 {
        if cancellation?.isCancelled == true { abort = .cancelled; return 1 }
        if let idleTimeout {
            let silent = Double(DispatchTime.now().uptimeNanoseconds - lastActivity) / 1e9
            if silent > idleTimeout { abort = .idle; return 1 }
        }
        return 0
    }
}

private let transferWrite: hydra_curl_write_cb = { ptr, size, n, ud in
    guard let ud else { return 0 }
    let state = Unmanaged<TransferState>.fromOpaque(ud).takeUnretainedValue()
    let count = size * n
    guard count > 0, let ptr else { return count }
    return state.write(UnsafeRawBufferPointer(start: ptr, count: count)) ? count : 0
}

private let transferHeader: hydra_curl_write_cb = { ptr, size, n, ud in
    guard let ud, let ptr else { return 0 }
    let state = Unmanaged<TransferState>.fromOpaque(ud).takeUnretainedValue()
    let count = size * n
    state.header(String(decoding: UnsafeRawBufferPointer(start: ptr, count: count), as: UTF8.self))
    return count
}

private let transferProgress: hydra_curl_xferinfo_cb = { ud, _, _, _, _ in
    guard let ud else { return 0 }
    return Unmanaged<TransferState>.fromOpaque(ud).takeUnretainedValue().progress()
}
