import XCTest
import Foundation
import Synchronization
@testable import HydraCore
@testable import HydraIO

final class HTTPClientTests: XCTestCase {
    private func serve(_ handler: @escaping HTTPHandler) throws -> (MiniHTTPServer, String) {
        let s = MiniHTTPServer(port: 0, handler: handler)
        let port = try s.start()
        addTeardownBlock { s.stop() }
        return (s, "http://127.0.0.1:\(port)")
    }

    func testGetAndPostCarryHeadersAndBody() throws {
        let (_, base) = try serve { req in
            .json("{\"method\":\"\(req.method)\",\"key\":\"\(req.headers["x-api-key"] ?? "")\",\"len\":\(req.body.count)}")
        }
        let c = HTTPClient(service: "svc", defaultHeaders: ["x-api-key": "k1"])
        let r = try c.send(HTTPClientRequest(url: base + "/a"))
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.jsonValue?["method"]?.stringValue, "GET")
        XCTAssertEqual(r.jsonValue?["key"]?.stringValue, "k1")
        XCTAssertEqual(r.headers["content-type"], "application/json")
        let p = try c.send(.json(url: base + "/b", body: .object(["x": .string(String(repeating: "a", count: 5000))])))
        XCTAssertEqual(p.jsonValue?["method"]?.stringValue, "POST")
        XCTAssertEqual(p.jsonValue?["len"]?.intValue, 5008)
    }

    func testStreamsLinesAcceptingCRLFAndUnterminatedLastLine() throws {
        let (_, base) = try serve { _ in
            .stream(status: 200, headers: ["Content-Type": "text/event-stream"]) { w in
                w.write("data: 1\r\n\r\n: ping\r\n")
                w.write("data: 2\n\ndata: [DO")
                w.write("NE]")
            }
        }
        var lines: [String] = []
        try HTTPClient(service: "svc").stream(HTTPClientRequest(url: base)) { lines.append($0); return true }
        XCTAssertEqual(lines, ["data: 1", "", ": ping", "data: 2", "", "data: [DONE]"])
    }

    func testNon2xxStreamBodyIsBufferedNotDelivered() throws {
        let (_, base) = try serve { _ in .json("{\"detail\":\"No models are currently loaded.\"}", status: 503) }
        var lines = 0
        let r = try HTTPClient(service: "tabbyapi").stream(HTTPClientRequest(method: "POST", url: base)) { _ in lines += 1; return true }
        XCTAssertEqual(r.status, 503)
        XCTAssertEqual(lines, 0)
        XCTAssertTrue(r.summary.contains("tabbyapi: POST \(base) → HTTP 503"), r.summary)
    }

    func testStreamCutMidwayIsDropped() throws {
        let (_, base) = try serve { _ in
            .stream(status: 200, headers: [:]) { w in w.write("{\"a\":1}\n"); w.abort() }
        }
        var got: [String] = []
        XCTAssertThrowsError(try HTTPClient(service: "ollama").stream(HTTPClientRequest(url: base)) { got.append($0); return true }) { e in
            XCTAssertEqual((e as? HTTPClientError)?.kind, .dropped, "\(e)")
            XCTAssertTrue("\(e)".hasPrefix("ollama: GET \(base)"))
        }
        XCTAssertEqual(got, ["{\"a\":1}"])
    }

    func testRefusedConnectionNamesServiceAndURL() throws {
        let (s, base) = try serve { _ in .text("x") }
        s.stop()
        XCTAssertThrowsError(try HTTPClient(service: "comfyui").send(HTTPClientRequest(url: base + "/x"), options: HTTPClientOptions(retries: 0))) { e in
            let he = e as? HTTPClientError
            XCTAssertEqual(he?.kind, .connect)
            XCTAssertEqual(he?.executionFailure.failureClass, .transient)
            XCTAssertTrue("\(e)".contains("comfyui: GET \(base)/x"))
        }
    }

    func testOversizeResponseIsRefused() throws {
        let (_, base) = try serve { _ in .full(status: 200, headers: [:], body: Data(count: 200_000)) }
        XCTAssertThrowsError(try HTTPClient(service: "s").send(HTTPClientRequest(url: base), options: HTTPClientOptions(maxResponseBytes: 10_000))) { e in
            XCTAssertEqual((e as? HTTPClientError)?.kind, .tooLarge)
            XCTAssertEqual((e as? HTTPClientError)?.executionFailure.failureClass, .permanent)
        }
    }

    func testDeadlineCutsAHungRequest() throws {
        let release = Atomic<Bool>(false)
        let (_, base) = try serve { _ in
            while !release.load(ordering: .relaxed) { Thread.sleep(forTimeInterval: 0.01) }
            return .text("late")
        }
        defer { release.store(true, ordering: .relaxed) }
        let start = Date()
        XCTAssertThrowsError(try HTTPClient(service: "s").send(HTTPClientRequest(url: base), deadline: Date().addingTimeInterval(0.3))) { e in
            XCTAssertEqual((e as? HTTPClientError)?.kind, .deadline)
            XCTAssertEqual((e as? HTTPClientError)?.executionFailure.failureClass, .timeout)
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 3)
    }

    func testIdleTimeoutAndCancellationStopAStalledStream() throws {
        let release = Atomic<Bool>(false)
        let (_, base) = try serve { _ in
            .stream(status: 200, headers: [:]) { w in
                w.write("first\n")
                while !release.load(ordering: .relaxed) { Thread.sleep(forTimeInterval: 0.01) }
            }
        }
        defer { release.store(true, ordering: .relaxed) }
        XCTAssertThrowsError(try HTTPClient(service: "s").stream(HTTPClientRequest(url: base), options: HTTPClientOptions(idleTimeout: 0.3)) { _ in true }) { e in
            XCTAssertEqual((e as? HTTPClientError)?.kind, .idle, "\(e)")
        }
        let flag = CancellationFlag()
        XCTAssertThrowsError(try HTTPClient(service: "s").stream(HTTPClientRequest(url: base), cancellation: flag) { _ in flag.cancel(); return true }) { e in
            XCTAssertEqual((e as? HTTPClientError)?.kind, .cancelled, "\(e)")
        }
    }

    func testRetriesOnlySafeRequests() throws {
        let hits = Atomic<Int>(0)
        let (_, base) = try serve { _ in
            let n = hits.add(1, ordering: .relaxed).newValue
            return n < 3 ? .json("{}", status: 503) : .json("{\"ok\":true}")
        }
        let c = HTTPClient(service: "s", options: HTTPClientOptions(retries: 3, retryBackoff: 0.01))
        XCTAssertEqual(try c.send(HTTPClientRequest(url: base)).status, 200)
        XCTAssertEqual(hits.load(ordering: .relaxed), 3)
        hits.store(0, ordering: .relaxed)
        XCTAssertEqual(try c.send(.json(url: base, body: .null)).status, 503, "a POST is not repeated")
        XCTAssertEqual(hits.load(ordering: .relaxed), 1)
    }

    func testQueryEncoding() {
        XCTAssertEqual(HTTPClient.query([("filename", "a b&c.png"), ("subfolder", "x/y")]), "?filename=a%20b%26c.png&subfolder=x%2Fy")
    }
}
