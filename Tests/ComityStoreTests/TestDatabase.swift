import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO
import Testing

@testable import ComityStore

/// The throwaway PostgreSQL that `ops/test` starts; tests that need it are skipped without it.
enum TestDatabase {
    static let url = ProcessInfo.processInfo.environment["COMITY_TEST_PG_URL"]
    static var isAvailable: Bool { url != nil }
    static let logger: Logger = {
        var logger = Logger(label: "comity.test")
        logger.logLevel = .error
        return logger
    }()

    /// Creates a fresh database, runs `body` with a client on it, and drops the database afterwards.
    static func withDatabase<T: Sendable>(
        migrate: Bool = true, _ body: @Sendable (PostgresClient, DatabaseURL) async throws -> T
    ) async throws -> T {
        let server = try DatabaseURL(try #require(url))
        let name = "t_\(UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: ""))"
        try await PostgresClient.with(try server.clientConfiguration(maxConnections: 1), logger: logger) { admin in
            try await admin.query(PostgresQuery(unsafeSQL: "create database \(name)"), logger: logger)
        }
        let database = server.with(database: name)
        do {
            let result = try await PostgresClient.with(try database.clientConfiguration(maxConnections: 20), logger: logger) { client in
                if migrate { try await Migrator(logger: logger).migrate(client) }
                return try await body(client, database)
            }
            try await drop(name, server: server)
            return result
        } catch {
            try? await drop(name, server: server)
            throw error
        }
    }

    static func drop(_ name: String, server: DatabaseURL) async throws {
        try await PostgresClient.with(try server.clientConfiguration(maxConnections: 1), logger: logger) { admin in
            try await admin.query(PostgresQuery(unsafeSQL: "drop database if exists \(name) with (force)"), logger: logger)
        }
    }

    /// A store on `client` with a small federation: jurisdictions EU ⊃ DE and KE, regions, partners, one project,
    /// and an admin and researcher principal.
    static func seeded(_ client: PostgresClient, configuration: Store.Configuration = .init()) async throws -> Seed {
        let store = Store(client: client, configuration: configuration, logger: logger)
        _ = try await store.addJurisdiction(Jurisdiction(code: "EU"))
        _ = try await store.addJurisdiction(Jurisdiction(code: "DE", within: "EU"))
        _ = try await store.addJurisdiction(Jurisdiction(code: "KE"))
        _ = try await store.addRegion(Region(name: "eu-de-1", jurisdiction: "DE"))
        _ = try await store.addRegion(Region(name: "ke-nbo-1", jurisdiction: "KE"))
        _ = try await store.addPartner(Partner(name: "tum", jurisdiction: "DE"))
        _ = try await store.addPartner(Partner(name: "uon", jurisdiction: "KE"))
        _ = try await store.addProject(Project(name: "llm", partner: "tum"))
        _ = try await store.addProject(Project(name: "asr", partner: "uon"))
        let adminToken = try #require(try await store.bootstrapAdmin())
        let admin = try #require(try await store.principal(forToken: adminToken))
        return Seed(store: store, admin: admin)
    }

    struct Seed: Sendable {
        var store: Store
        var admin: Principal

        /// Enrolls a host through a join token, as an agent would; `runner` is how it runs jobs (only `.sandbox`
        /// hosts take jobs whose data is not public).
        func enroll(
            _ name: String, partner: String = "tum", region: String = "eu-de-1", cpus: Int = 8, memory: Int64 = 32 << 30,
            gpus: [GPU] = [], runner: RunnerKind = .process
        ) async throws -> (host: Int64, agent: Principal) {
            let join = try await store.createJoinToken(CreateJoinTokenRequest(partner: partner, region: region), by: admin)
            let runtime = HostRuntime(runner: runner, available: runner == .process ? [.process] : [.process, runner])
            let enrolled = try await store.enroll(
                EnrollRequest(
                    joinToken: join.token, name: name,
                    resources: HostResources(cpuMillis: cpus * 1000, memoryBytes: memory, gpus: gpus, runtime: runtime),
                    agentVersion: "test"))
            let agent = try #require(try await store.principal(forToken: enrolled.token))
            return (enrolled.hostId, agent)
        }

        func submit(_ name: String, project: String = "llm", cpus: Int = 1, gpus: Int = 0, retries: Int = 0, priority: Int = 50) async throws -> Int64 {
            let spec = JobSpec(
                name: name, project: project, command: ["true"],
                resources: ResourceRequest(cpuMillis: cpus * 1000, memoryBytes: 1 << 30, gpus: gpus), retries: retries, priority: priority)
            return try await store.submit([spec], by: admin)[0]
        }

        /// A partner admin of `partner`, as its token resolves.
        func partnerAdmin(_ partner: String) async throws -> Principal {
            let token = try await store.createToken(CreateTokenRequest(role: .partnerAdmin, partner: partner), by: admin).token
            return try #require(try await store.principal(forToken: token))
        }

        func state(_ job: Int64) async throws -> JobView {
            try #require(try await store.job(job, scope: .all))
        }
    }
}

extension PostgresClient {
    /// The single number a query such as `select count(*) …` returns (-1 when it returns no row).
    func number(_ query: PostgresQuery) async throws -> Int64 {
        try await self.query(query, logger: TestDatabase.logger).decode(Int64.self).collect().first ?? -1
    }
}
