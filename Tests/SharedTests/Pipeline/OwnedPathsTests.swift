import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
@testable import HydraCore
@testable import HydraPipeline
#endif

/// The runner moves or deletes only files inside its own directories, whatever a result names.
final class OwnedPathsTests: XCTestCase {
    var base: URL!
    var out: String { base.appendingPathComponent("out").path }
    var assets: String { base.appendingPathComponent("assets").path }
    var quarantine: String { base.appendingPathComponent("quarantine").path }
    /// Stands in for /etc/passwd: a file the runner must never touch.
    var secret: String { base.appendingPathComponent("etc/passwd").path }

    override func setUpWithError() throws {
        // realpath: the temp directory may itself sit behind a symlink.
        let tmp = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("hydra-owned-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        base = URL(fileURLWithPath: OwnedPaths.realPath(tmp.path)!)
        for d in ["out/job-1", "etc", "quarantine/n1/c"] {
            try FileManager.default.createDirectory(atPath: base.appendingPathComponent(d).path, withIntermediateDirectories: true)
        }
        try "root:x:0:0".write(toFile: secret, atomically: true, encoding: .utf8)
        try "png".write(toFile: out + "/job-1/img.png", atomically: true, encoding: .utf8)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: base) }

    func assertSecretUntouched(file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(try? String(contentsOfFile: secret, encoding: .utf8), "root:x:0:0", file: file, line: line)
    }

    func place(_ source: String, delete: Bool = false) throws -> PipelineRunner.Placement {
        try PipelineRunner.place(source: source, owned: OwnedPaths(roots: [out]), targetDir: assets + "/c", name: "c-1-v0.png", delete: delete)
    }

    func refused(_ p: PipelineRunner.Placement) -> Bool { if case .refused = p { return true } else { return false } }

    func testAFileInsideTheOutputsIsMoved() throws {
        XCTAssertEqual(try place(out + "/job-1/img.png"), .moved(assets + "/c/c-1-v0.png"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: assets + "/c/c-1-v0.png"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/job-1/img.png"))
        XCTAssertEqual(try place(out + "/job-1/gone.png"), .missing)
    }

    func testAPathOutsideIsRefusedAndUntouched() throws {
        for delete in [false, true] {
            let p = try place(secret, delete: delete)
            XCTAssertTrue(refused(p), "\(p)")
            assertSecretUntouched()
        }
        guard case .refused(let why) = try place(secret) else { return XCTFail() }
        XCTAssertTrue(why.description.contains("outside the directories the runner owns"), why.description)
        XCTAssertFalse(FileManager.default.fileExists(atPath: assets + "/c/c-1-v0.png"))
    }

    func testDotDotTraversalIsRefused() throws {
        for p in [out + "/job-1/../../etc/passwd", out + "/../etc/passwd", out + "/./job-1/../../etc/passwd"] {
            for delete in [false, true] {
                XCTAssertTrue(refused(try place(p, delete: delete)), p)
                assertSecretUntouched()
            }
        }
        // Lexically outside and missing is refused too, not "missing".
        XCTAssertTrue(refused(try place(out + "/../etc/nope")))
        // A sibling whose name starts with the root's name is not inside it.
        try FileManager.default.createDirectory(atPath: out + "-evil", withIntermediateDirectories: true)
        try "x".write(toFile: out + "-evil/img.png", atomically: true, encoding: .utf8)
        XCTAssertTrue(refused(try place(out + "-evil/img.png", delete: true)))
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "-evil/img.png"))
    }

    func testSymlinksPointingOutOrSittingOutsideAreRefused() throws {
        let fm = FileManager.default
        try fm.createSymbolicLink(atPath: out + "/job-1/link.png", withDestinationPath: secret)
        try fm.createSymbolicLink(atPath: out + "/job-2", withDestinationPath: base.appendingPathComponent("etc").path)
        try fm.createSymbolicLink(atPath: base.appendingPathComponent("etc/inward.png").path, withDestinationPath: out + "/job-1/img.png")
        try fm.createSymbolicLink(atPath: out + "/job-1/dangling.png", withDestinationPath: base.appendingPathComponent("etc/none").path)
        for p in [out + "/job-1/link.png", out + "/job-2/passwd", base.appendingPathComponent("etc/inward.png").path, out + "/job-1/dangling.png"] {
            for delete in [false, true] {
                XCTAssertTrue(refused(try place(p, delete: delete)), p)
            }
        }
        assertSecretUntouched()
        XCTAssertEqual(try fm.destinationOfSymbolicLink(atPath: out + "/job-1/link.png"), secret, "the link itself is left alone")
        XCTAssertTrue(fm.fileExists(atPath: out + "/job-1/img.png"), "the file a link outside points to is not moved")
        XCTAssertEqual(try fm.destinationOfSymbolicLink(atPath: base.appendingPathComponent("etc/inward.png").path), out + "/job-1/img.png")
    }

    func testADirectorySwappedForASymlinkAfterTheCheckIsNotFollowed() throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: out + "/job-3", withIntermediateDirectories: true)
        try "mine".write(toFile: out + "/job-3/img.png", atomically: true, encoding: .utf8)
        try "theirs".write(toFile: base.appendingPathComponent("etc/img.png").path, atomically: true, encoding: .utf8)
        let owned = OwnedPaths(roots: [out])
        guard case .owned(let p) = owned.check(out + "/job-3/img.png") else { return XCTFail("inside the outputs") }
        try fm.moveItem(atPath: out + "/job-3", toPath: out + "/job-3-old")
        try fm.createSymbolicLink(atPath: out + "/job-3", withDestinationPath: base.appendingPathComponent("etc").path)
        XCTAssertThrowsError(try owned.remove(p)) { XCTAssertEqual($0 as? OwnedPaths.Refusal, .changed(p)) }
        XCTAssertThrowsError(try owned.move(p, to: assets + "-x.png")) { XCTAssertEqual($0 as? OwnedPaths.Refusal, .changed(p)) }
        XCTAssertEqual(try String(contentsOfFile: base.appendingPathComponent("etc/img.png").path, encoding: .utf8), "theirs")
        XCTAssertFalse(fm.fileExists(atPath: assets + "-x.png"))
    }

    func testAMoveToAnotherFileSystemCopiesThenUnlinks() throws {
        var a = stat(), b = stat()
        guard stat("/dev/shm", &a) == 0, stat(base.path, &b) == 0, a.st_dev != b.st_dev, access("/dev/shm", W_OK) == 0 else {
            throw XCTSkip("no second writable file system (/dev/shm) here")
        }
        let dest = "/dev/shm/hydra-owned-\(UUID().uuidString).png"
        defer { try? FileManager.default.removeItem(atPath: dest) }
        try OwnedPaths(roots: [out]).move(out + "/job-1/img.png", to: dest)
        XCTAssertEqual(try String(contentsOfFile: dest, encoding: .utf8), "png")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/job-1/img.png"))
    }

    func testOnlyRegularFilesAreActedOn() throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: out + "/job-4/sub", withIntermediateDirectories: true)
        try "keep".write(toFile: out + "/job-4/sub/keep.png", atomically: true, encoding: .utf8)
        try fm.createSymbolicLink(atPath: out + "/job-4/inward.png", withDestinationPath: out + "/job-1/img.png")
        for p in [out + "/job-4", out + "/job-4/sub", out + "/job-4/inward.png"] {
            for delete in [false, true] {
                XCTAssertEqual(try place(p, delete: delete), .refused(.notAFile(p)), p)
            }
        }
        XCTAssertTrue(fm.fileExists(atPath: out + "/job-4/sub/keep.png"))
        XCTAssertTrue(fm.fileExists(atPath: out + "/job-1/img.png"))
        XCTAssertNotNil(try? fm.destinationOfSymbolicLink(atPath: out + "/job-4/inward.png"))
    }

    func testMalformedPathsAndTheRootItselfAreRefused() throws {
        for p in ["job-1/img.png", "", out, out + "/", out + "/job-1/..", out + "/job-1/.", "/", out + "/job-1/img.png\u{0}.txt"] {
            XCTAssertTrue(refused(try place(p, delete: true)), p.debugDescription)
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/job-1/img.png"))
    }

    func testApprovedDeletionRemovesOnlyQuarantinedFiles() throws {
        let inside = quarantine + "/n1/c/a.png"
        try "a".write(toFile: inside, atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: quarantine + "/n1/c/b.png", withDestinationPath: secret)
        let (deleted, missing, refused) = try PipelineRunner.deleteOwned(
            [inside, secret, quarantine + "/n1/../../etc/passwd", quarantine + "/n1/c/b.png", quarantine + "/n1/c/gone.png", out + "/job-1/img.png"],
            owned: OwnedPaths(roots: [quarantine]))
        XCTAssertEqual(deleted, [inside])
        XCTAssertEqual(missing, [quarantine + "/n1/c/gone.png"])
        XCTAssertEqual(refused.count, 4)
        assertSecretUntouched()
        XCTAssertFalse(FileManager.default.fileExists(atPath: inside))
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/job-1/img.png"))
    }

    func testOutputsDirConfig() throws {
        let base = "queue: q.yaml\nassets_dir: a\nreports_dir: /r\n"
        XCTAssertEqual(try PipelineConfig.parse(text: base, file: "/etc/hydra/p.yaml").outputsDirs, [PipelineConfig.defaultOutputsDir])
        XCTAssertEqual(try PipelineConfig.parse(text: base + "outputs_dir: out", file: "/etc/hydra/p.yaml").outputsDirs, ["/etc/hydra/out"])
        XCTAssertEqual(try PipelineConfig.parse(text: base + "outputs_dir: [/mnt/a, b]", file: "/etc/hydra/p.yaml").outputsDirs, ["/mnt/a", "/etc/hydra/b"])
        for bad in ["outputs_dir: []", "outputs_dir: [1]", "outputs_dir: /", "outputs_dir: {a: b}"] {
            XCTAssertThrowsError(try PipelineConfig.parse(text: base + bad, file: "/etc/hydra/p.yaml"), bad) { e in
                XCTAssertTrue("\(e)".contains("outputs_dir"), "\(e)")
            }
        }
    }
}
