// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

// The release comity-agent is the binary a partner copies to a host (ops/build-agent-static strips and packs it).
// - The Swift runtime and Foundation are linked in, so it runs where no Swift toolchain is; it needs glibc 2.35
//   (Ubuntu 22.04) or newer.
// - lld lays out the functions an agent runs (Sources/comity-agent/symbol-order.txt, written by
//   ops/agent-symbol-order) next to each other. The kernel maps a binary's pages in blocks around each one touched:
//   scattered over 28 MB of code, 2 MB of functions kept 17-19 MB of it resident.
// - It exports no symbols, so the loader does not consult its table for every symbol a system library binds.
// - No DWARF; the symbol table stays, for backtraces.
// Idle RSS: 36.1 MB linked to the shared libraries, 23.7 MB so (docs/performance.md, "Round 5").
// Debug builds, which the tests run, stay dynamic and link fast.
let agentReleaseLinkerSettings: [LinkerSetting] = [
    .unsafeFlags(
        [
            "-static-stdlib", "-use-ld=lld",
            "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/Sources/comity-agent/symbol-order.txt",
            "-Xlinker", "--no-warn-symbol-ordering",
            "-Xlinker", "--no-export-dynamic", "-Xlinker", "--strip-debug",
            // What `import Foundation` autolinks when compiled for the static runtime (--static-swift-stdlib);
            // these objects were compiled for the shared one, whose module names only the top libraries.
            "-lCoreFoundation", "-l_FoundationICU", "-l_FoundationCShims", "-l_FoundationCollections",
        ],
        .when(platforms: [.linux], configuration: .release)
    )
]

let package = Package(
    name: "comity",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "comity-server", targets: ["comity-server"]),
        .executable(name: "comity-agent", targets: ["comity-agent"]),
        .executable(name: "comity", targets: ["comity"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.5.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
    ],
    targets: [
        // Pure domain: no I/O, no clocks (swift-crypto for the audit ledger's hashes and signatures).
        .target(name: "ComityCore", dependencies: [.product(name: "Crypto", package: "swift-crypto")], swiftSettings: swiftSettings),
        // Wire types shared by server, agent and CLI.
        .target(name: "ComityAPI", dependencies: ["ComityCore"], swiftSettings: swiftSettings),
        // PostgreSQL: migrations (embedded from migrations/ at build time), queries, embedded database.
        .target(
            name: "ComityStore",
            dependencies: [
                "ComityCore", "ComityAPI",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings,
            plugins: ["MigrationsPlugin"]
        ),
        .target(
            name: "ComityServer",
            dependencies: [
                "ComityCore", "ComityAPI", "ComityStore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                // The service gateway forwards requests to replicas.
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ComityClient",
            dependencies: [
                "ComityCore", "ComityAPI",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ComityAgent",
            dependencies: [
                "ComityCore", "ComityAPI", "ComityClient",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ComityCLI",
            dependencies: [
                "ComityCore", "ComityAPI", "ComityClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "comity-server",
            dependencies: [
                "ComityServer", "ComityStore", "ComityCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "comity-agent",
            dependencies: [
                "ComityAgent",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["symbol-order.txt"],
            swiftSettings: swiftSettings,
            linkerSettings: agentReleaseLinkerSettings
        ),
        .executableTarget(
            name: "comity",
            dependencies: ["ComityCLI"],
            swiftSettings: swiftSettings
        ),
        // The benchmark driver that ops/bench runs (simulated agents, dispatch latency, scale curve).
        .executableTarget(
            name: "comity-bench",
            dependencies: [
                "ComityClient", "ComityAPI", "ComityCore", "ComityStore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                // comity-bench gateway: the trivial backend a service replica stands for.
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "EmbedMigrations", swiftSettings: swiftSettings),
        .plugin(name: "MigrationsPlugin", capability: .buildTool(), dependencies: ["EmbedMigrations"]),
        .testTarget(
            name: "ComityCoreTests",
            dependencies: ["ComityCore", "ComityAPI", .product(name: "PropertyBased", package: "swift-property-based")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ComityStoreTests",
            dependencies: [
                "ComityStore", "ComityCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ComityAgentTests",
            dependencies: [
                "ComityAgent", "ComityAPI", "ComityCore", "ComityClient", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ComityServerTests",
            dependencies: [
                "ComityServer", "ComityStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ComityE2ETests",
            dependencies: [
                "ComityAPI", "ComityCore",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
