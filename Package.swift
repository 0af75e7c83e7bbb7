// swift-tools-version:6.0
import PackageDescription

// The targets are the architecture (docs/architecture.md): each may import only the ones
// listed as its dependencies, and each binary links only what it uses (hydra-agent has no libpq).
//
//   HydraCore        pure decisions and models: router, simulator, job lifecycle, batch files,
//                    cluster config, the night's planner and state machine (Foundation + Yams)
//   HydraWire        what crosses Redis: envelopes, results, heartbeats, keys, signing, fast JSON
//   HydraIO          blocking clients and servers at the edges: Redis, HTTP, metrics, logging, processes
//   HydraStore       PostgreSQL: connection, migrations, the job store, the job state writer
//   HydraExecutors   what runs a job on a node (ComfyUI, LLM, TTS, scorer, command) + nvidia-smi
//   HydraCoordinator the leader: dispatch, results, housekeeping, leadership
//   HydraPipeline    the overnight generation cycle's runner
//   HydraConsole     the web console
//   HydraTestSupport fakes of the AI services, the chaos harness, benchmarks (tests and dev tools only)
let package = Package(
    name: "hydra",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "hydra", targets: ["Coordinator"]),
        .executable(name: "hydra-agent", targets: ["NodeAgent"]),
        // Development tools, not installed on nodes: fake ComfyUI/LLM/TTS/scorer servers for tests and
        // the demo, and the chaos harness + benchmarks.
        .executable(name: "hydra-fake", targets: ["FakeServices"]),
        .executable(name: "hydra-dev", targets: ["DevTools"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        // Test-only: property tests of the router and the simulator.
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    ],
    targets: [
        // Thin system-library targets for the design card's C libraries. The module
        // maps carry small static-inline shims for the variadic C calls.
        .systemLibrary(name: "CHiredis", path: "Sources/CHiredis", pkgConfig: "hiredis",
                       providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CLibPQ", path: "Sources/CLibPQ", pkgConfig: "libpq",
                       providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CCurl", path: "Sources/CCurl", pkgConfig: "libcurl",
                       providers: [.apt(["libcurl4-openssl-dev"])]),
        .target(name: "HydraCore", dependencies: [.product(name: "Yams", package: "Yams")],
                path: "Sources/Shared/HydraCore"),
        .target(name: "HydraWire", dependencies: ["HydraCore", .product(name: "Crypto", package: "swift-crypto")],
                path: "Sources/Shared/HydraWire"),
        .target(name: "HydraIO", dependencies: ["HydraCore", "HydraWire", "CHiredis", "CCurl",
                                                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                                .product(name: "Crypto", package: "swift-crypto")],
                path: "Sources/Shared/HydraIO"),
        .target(name: "HydraStore", dependencies: ["HydraCore", "HydraWire", "HydraIO", "CLibPQ"],
                path: "Sources/Shared/HydraStore"),
        .target(name: "HydraExecutors", dependencies: ["HydraCore", "HydraWire", "HydraIO"],
                path: "Sources/Shared/HydraExecutors"),
        .target(name: "HydraCoordinator", dependencies: ["HydraCore", "HydraWire", "HydraIO", "HydraStore",
                                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                path: "Sources/Coordinator/Service"),
        .target(name: "HydraPipeline", dependencies: ["HydraCore", "HydraIO", "HydraStore"],
                path: "Sources/Shared/HydraPipeline"),
        .target(name: "HydraConsole", dependencies: ["HydraCore", "HydraIO", "HydraStore", "HydraPipeline"],
                path: "Sources/Shared/HydraConsole"),
        .target(name: "HydraTestSupport", dependencies: ["HydraCore", "HydraWire", "HydraIO", "HydraStore", "HydraExecutors"],
                path: "Sources/Shared/HydraTestSupport"),
        .executableTarget(
            name: "Coordinator",
            dependencies: ["HydraCore", "HydraWire", "HydraIO", "HydraStore", "HydraCoordinator", "HydraPipeline",
                           "HydraConsole", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/Coordinator/CLI"
        ),
        .executableTarget(
            name: "NodeAgent",
            dependencies: ["HydraCore", "HydraWire", "HydraIO", "HydraExecutors",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/NodeAgent"
        ),
        .executableTarget(
            name: "FakeServices",
            dependencies: ["HydraCore", "HydraIO", "HydraTestSupport",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/FakeServices"
        ),
        .executableTarget(
            name: "DevTools",
            dependencies: ["HydraCore", "HydraWire", "HydraIO", "HydraStore", "HydraCoordinator", "HydraConsole",
                           "HydraTestSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/DevTools"
        ),
        .testTarget(
            name: "SharedTests",
            dependencies: ["HydraCore", "HydraWire", "HydraIO", "HydraStore", "HydraExecutors", "HydraCoordinator",
                           "HydraPipeline", "HydraConsole", "HydraTestSupport",
                           .product(name: "PropertyBased", package: "swift-property-based")],
            path: "Tests/SharedTests",
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["HydraCore", "HydraWire", "HydraIO", "HydraStore", "HydraExecutors", "HydraCoordinator",
                           "HydraPipeline", "HydraConsole", "HydraTestSupport", "Coordinator", "NodeAgent", "DevTools"],
            path: "Tests/IntegrationTests"
        ),
    ],
    swiftLanguageModes: [.v6]
)
