// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "hydra",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "hydra", targets: ["Coordinator"]),
        .executable(name: "hydra-agent", targets: ["NodeAgent"]),
        // Development tool: fake ComfyUI/LLM/TTS/scorer servers for tests and the demo; not installed on nodes.
        .executable(name: "hydra-fake", targets: ["FakeServices"]),
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
        .target(
            name: "Shared",
            dependencies: ["CHiredis", "CLibPQ", "CCurl", .product(name: "Yams", package: "Yams"),
                           .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Crypto", package: "swift-crypto")],
            path: "Sources/Shared"
        ),
        .executableTarget(
            name: "Coordinator",
            dependencies: ["Shared", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/Coordinator"
        ),
        .executableTarget(
            name: "NodeAgent",
            dependencies: ["Shared", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/NodeAgent"
        ),
        .executableTarget(
            name: "FakeServices",
            dependencies: ["Shared", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/FakeServices"
        ),
        .testTarget(
            name: "SharedTests",
            dependencies: ["Shared", .product(name: "PropertyBased", package: "swift-property-based")],
            path: "Tests/SharedTests",
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["Shared", "Coordinator", "NodeAgent"],
            path: "Tests/IntegrationTests"
        ),
    ],
    swiftLanguageModes: [.v6]
)
