import XCTest
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
@testable import HydraCore
@testable import HydraIO
import HydraTestSupport
#endif

/// The response side of MiniHTTPServer's limits (a whole-response write budget, a per-client connection cap),
/// strict request-target decoding and the reason phrases. Loopback sockets; waits are on conditions with deadlines.
final class HTTPResponseLimitsTests: XCTestCase {
    typealias C = MiniHTTPServerLimitsTests

    private func serve(_ limits: HTTPServerLimits, handler: @escaping HTTPHandler) throws -> MiniHTTPServer {
        let s = MiniHTTPServer(port: 0, limits: limits, handler: handler)
        try s.start()
        addTeardownBlock { s.stop() }
        return s
    }

    /// A client that sends a complete request and then reads a little now and then (4 KiB every 50 ms, so every
    /// send() makes progress and a per-send timeout never fires) is cut off once the whole-response budget is spent.
    func testASlowReaderIsCutOffAtTheWholeResponseBudget() throws {
        let big = Data(repeating: 0x61, count: 32 << 20)
        let server = try serve(HTTPServerLimits(writeTimeoutS: 1)) { req in
            req.path == "/healthz" ? .text("ok\n") : .full(status: 200, headers: [:], body: big)
        }
        let fd = LoopbackHTTP.connect(server.port)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var small: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        LoopbackHTTP.send(fd, "GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        let started = Date()
        var got = 0
        var closed = false
        var buf = [UInt8](repeating: 0, count: 4096)
        // Trickle until the server gives up (or 15 s: without the budget it would take ~400 s to send 32 MiB).
        while Date().timeIntervalSince(started) < 15 {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 50)
            let n = recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT))
            if n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { closed = true; break }
            if n > 0 { got += n }
            usleep(50_000)
        }
        XCTAssertTrue(closed, "the connection should be closed once the write budget is spent")
        XCTAssertLessThan(got, big.count)
        XCTAssertTrue(C.waitFor(5) { server.rejections[.writeTimeout] == 1 }, "\(server.rejections)")
        XCTAssertTrue(C.waitFor(5) { server.activeConnections == 0 })
        XCTAssertTrue(C.healthz(server.port))
    }

    /// Slow readers holding every slot: once their budget is spent, others are served again.
    func testSlowReadersHoldingEverySlotAreReleased() throws {
        let big = Data(repeating: 0x62, count: 16 << 20)
        let server = try serve(HTTPServerLimits(maxConnections: 4, writeTimeoutS: 0.5)) { req in
            req.path == "/healthz" ? .text("ok\n") : .full(status: 200, headers: [:], body: big)
        }
        var fds: [Int32] = []
        defer { fds.forEach { close($0) } }
        for _ in 0..<4 {
            let fd = LoopbackHTTP.connect(server.port)
            var small: Int32 = 4096
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            LoopbackHTTP.send(fd, "GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            fds.append(fd)
        }
        XCTAssertTrue(C.waitFor(10) { server.rejections[.writeTimeout] == 4 }, "\(server.rejections)")
        XCTAssertTrue(C.waitFor(5) { C.healthz(server.port) })
    }

    /// One address may hold at most `maxConnectionsPerClient` connections; one more gets 503 at once, and the
    /// slot comes back when a connection ends.
    func testOneClientCannotTakeEverySlot() throws {
        let release = Atomic<Bool>(false)
        let server = try serve(HTTPServerLimits(maxConnections: 8, requestTimeoutS: 10, capLoopbackClients: true)) { req in
            if req.path == "/hold" { while !release.load(ordering: .relaxed) { usleep(5_000) } }
            return .text("ok\n")
        }
        XCTAssertEqual(server.limits.maxConnectionsPerClient, 4)
        var fds: [Int32] = []
        defer { fds.forEach { close($0) } }
        for _ in 0..<4 {
            let fd = LoopbackHTTP.connect(server.port)
            LoopbackHTTP.send(fd, "GET /hold HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            fds.append(fd)
        }
        XCTAssertTrue(C.waitFor(5) { server.activeConnections == 4 })
        let refused = LoopbackHTTP.request(server.port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", timeout: 5)
        XCTAssertTrue(refused.hasPrefix("HTTP/1.1 503 Service Unavailable"), refused)
        XCTAssertEqual(server.rejections[.clientConnections], 1)
        release.store(true, ordering: .relaxed)
        XCTAssertTrue(C.waitFor(5) { server.activeConnections == 0 })
        XCTAssertTrue(C.healthz(server.port))
        // Loopback is exempt by default (a local TLS proxy is every client at once).
        XCTAssertFalse(HTTPServerLimits().capLoopbackClients)
    }

    func testWriteBudgetAndPerClientCapFromEnvironment() {
        let l = HTTPServerLimits.fromEnvironment(environment: ["HYDRA_HTTP_WRITE_TIMEOUT_S": "7.5", "HYDRA_HTTP_MAX_CONNECTIONS": "10"])
        XCTAssertEqual(l.writeTimeoutS, 7.5)
        XCTAssertEqual(l.maxConnectionsPerClient, 5)
        let m = HTTPServerLimits.fromEnvironment(environment: ["HYDRA_HTTP_MAX_CONNECTIONS_PER_CLIENT": "3", "HYDRA_HTTP_WRITE_TIMEOUT_S": "nan"])
        XCTAssertEqual(m.maxConnectionsPerClient, 3)
        XCTAssertEqual(m.writeTimeoutS, 30)
        XCTAssertEqual(HTTPServerLimits().maxConnectionsPerClient, 32)
    }

    func testStandardReasonPhrases() {
        for (code, phrase) in [(202, "Accepted"), (302, "Found"), (303, "See Other"), (409, "Conflict"), (415, "Unsupported Media Type")] {
            XCTAssertEqual(MiniHTTPServer.reason(code), phrase)
            XCTAssertTrue(String(decoding: MiniHTTPServer.head(code, [:], length: 0), as: UTF8.self).hasPrefix("HTTP/1.1 \(code) \(phrase)\r\n"))
        }
    }

    func testRequestTargetsAreDecodedStrictly() {
        func ok(_ t: String) -> MiniHTTPServer.Target? { try? MiniHTTPServer.parseTarget(t).get() }
        XCTAssertEqual(ok("/a/b%2Fc?x=%41&y=1+2&z"), .init(path: "/a/b/c", rawPath: "/a/b%2Fc", query: ["x": "A", "y": "1+2", "z": ""]))
        XCTAssertEqual(ok("/api/v1/jobs?state=pending%2Crunning")?.query["state"], "pending,running")
        XCTAssertEqual(ok("/%C3%A9")?.path, "/é")
        for bad in ["/api/v1/batches/%ff", "/x?state=pending%ff", "/x?batch=%ff", "/x?node=a%00b", "/batches/%00", "/x?a=%", "/x?a=%4",
                    "/x?a=%zz", "/x?%ff=1", "/x?a=%C3"] {
            XCTAssertNil(ok(bad), bad)
        }
        if case .failure(let e) = MiniHTTPServer.parseTarget("/x?state=pending%ff") { XCTAssertTrue(e.message.contains("'state'"), e.message) }
    }

    /// Generated targets with bad escapes, NUL, stray `%`, non-UTF-8: each is 400 (never a changed value reaching the
    /// handler), well-formed ones reach it with exactly their decoded value, and the server keeps serving.
    func testGeneratedTargetsAreRefusedOrDecodedExactly() throws {
        let seen = Mutex<[String: String]?>(nil)
        let server = try serve(HTTPServerLimits()) { req in
            seen.withLock { $0 = req.query }
            return .text("ok\n")
        }
        var g = SystemRandomNumberGenerator()
        let pieces = ["a", "Z", "%41", "%2F", "%ff", "%00", "%", "%4", "%zz", "%C3%A9", "%C3", "+", "-5", "nan", "%25", "."]
        for i in 0..<60 {
            var value = ""
            for _ in 0..<Int.random(in: 0...4, using: &g) { value += pieces.randomElement(using: &g)! }
            let expected = MiniHTTPServer.percentDecode(value)
            seen.withLock { $0 = nil }
            let reply = LoopbackHTTP.request(server.port, "GET /x?k=\(value) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", timeout: 5)
            if let expected {
                XCTAssertTrue(reply.hasPrefix("HTTP/1.1 200 "), "\(i) \(value): \(reply.prefix(80))")
                XCTAssertEqual(seen.withLock { $0?["k"] }, expected, value)
            } else {
                XCTAssertTrue(reply.hasPrefix("HTTP/1.1 400 "), "\(i) \(value): \(reply.prefix(80))")
                XCTAssertTrue(reply.contains("'k'"), reply)
                XCTAssertNil(seen.withLock { $0 }, "a refused target must not reach the handler")
            }
        }
        XCTAssertTrue(C.healthz(server.port) || LoopbackHTTP.request(server.port, "GET /x HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 200"))
    }
}
