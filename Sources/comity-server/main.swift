import ArgumentParser
import ComityCore
import ComityServer
import ComityStore
import Crypto
import Foundation
import Hummingbird
import Logging
import Metrics
import PostgresNIO
import Prometheus

@main
struct ComityServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "comity-server",
        abstract: "The Comity control plane: API, scheduler, lease reaper, metrics.",
        subcommands: [Serve.self, Migrate.self, CreateAdminToken.self],
        defaultSubcommand: Serve.self
    )
}

/// Where the database is: a URL, or an embedded PostgreSQL in the data folder.
struct DatabaseOptions: ParsableArguments {
    @Option(help: "PostgreSQL URL (postgres://user@host:port/db, or postgres:///db?host=/socket/dir). Env: COMITY_DATABASE_URL.")
    var databaseURL: String?

    @Option(help: "State folder. Without a database URL, the server runs its own PostgreSQL in DIR/pg.")
    var dataDir: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    func logger(_ label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        return logger
    }

    /// Resolves the database, starting the embedded one when needed (the caller stops it).
    func database(logger: Logger) async throws -> (DatabaseURL, EmbeddedPostgres?) {
        if let url = databaseURL ?? ProcessInfo.processInfo.environment["COMITY_DATABASE_URL"] {
            return (try DatabaseURL(url), nil)
        }
        guard let dataDir else {
            throw ValidationError("give --database-url URL (or COMITY_DATABASE_URL), or --data-dir DIR for an embedded database")
        }
        let embedded = try await EmbeddedPostgres(directory: URL(fileURLWithPath: dataDir).standardizedFileURL, logger: logger)
        try await embedded.start()
        return (embedded.url, embedded)
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the server (migrates the database first).")

    @OptionGroup var database: DatabaseOptions

    @Option(help: "Address to listen on, HOST:PORT.")
    var listen: String = "127.0.0.1:8700"

    @Option(help: "Where the first admin token is written (default DIR/admin.token). Never overwritten.")
    var adminTokenFile: String?

    @Option(help: "PEM certificate chain; with --tls-key the server speaks HTTPS only.")
    var tlsCert: String?

    @Option(help: "PEM private key for --tls-cert.")
    var tlsKey: String?

    @Option(help: "Attempt lease: an agent that does not renew within this time loses its attempts.")
    var lease: String = "30s"

    @Option(help: "Heartbeat interval told to agents at enrollment.")
    var heartbeat: String = "5s"

    @Option(help: "A host silent for this long is marked down and gets no new work.")
    var hostTimeout: String = "30s"

    @Option(help: "Bytes of output kept per job (later output is dropped and the job marked truncated).")
    var logLimit: String = "8Mi"

    @Option(help: "Connections in the database pool.")
    var poolSize: Int = 16

    @Option(help: "Ed25519 key that signs audit checkpoints (base64 of the raw 32-byte key; created, mode 600, if missing). Every replica of a deployment needs the same key. Default: audit.key beside the admin token.")
    var auditKey: String?

    @Option(help: "The ledger's name in its checkpoints (origin line and key name), e.g. comity.example.org/audit.")
    var auditOrigin: String = "comity.local/audit"

    @Option(help: "How often the audit ledger's head is signed when it moved.")
    var checkpointInterval: String = "5m"

    @Option(help: "Fair sharing's memory: contribution and usage lose half their weight in this long. Every replica needs the same value.")
    var shareHalfLife: String = "7d"

    @Option(help: "How often contribution and usage are accounted for fair sharing.")
    var accountingInterval: String = "30s"

    @Option(help: "A job preempted by a reclaim is not preempted again within this window.")
    var preemptionCooldown: String = "15m"

    mutating func validate() throws {
        guard listen.split(separator: ":").count == 2, Int(listen.split(separator: ":")[1]) != nil else {
            throw ValidationError("--listen: expected HOST:PORT such as 127.0.0.1:8700, got \(listen)")
        }
        for (name, value) in [("--lease", lease), ("--heartbeat", heartbeat), ("--host-timeout", hostTimeout)] where Quantity.seconds(value) == nil {
            throw ValidationError("\(name): expected a duration such as 30s or 2m, got \(value)")
        }
        guard Quantity.seconds(heartbeat)! * 3 <= Quantity.seconds(lease)! else {
            throw ValidationError("--heartbeat: expected at most a third of --lease (\(lease)), so that a lease renewed at half-time survives a missed heartbeat; got \(heartbeat)")
        }
        for (name, value) in [("--share-half-life", shareHalfLife), ("--accounting-interval", accountingInterval), ("--preemption-cooldown", preemptionCooldown)]
        where Quantity.seconds(value) == nil {
            throw ValidationError("\(name): expected a duration such as 30s, 15m or 7d, got \(value)")
        }
        guard Quantity.seconds(checkpointInterval) != nil else {
            throw ValidationError("--checkpoint-interval: expected a duration such as 5m, got \(checkpointInterval)")
        }
        guard !auditOrigin.isEmpty, !auditOrigin.contains(" "), !auditOrigin.contains("+"), !auditOrigin.contains("\n") else {
            throw ValidationError("--audit-origin: expected a name without spaces or '+', such as comity.example.org/audit")
        }
        guard Quantity.bytes(logLimit) != nil else { throw ValidationError("--log-limit: expected a size such as 8Mi, got \(logLimit)") }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        guard database.dataDir != nil || adminTokenFile != nil || database.databaseURL == nil else {
            throw ValidationError("with --database-url and no --data-dir, give --admin-token-file for the first admin token")
        }
    }

    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = database.logger("comity.server")

        var configuration = ServerConfiguration()
        let parts = listen.split(separator: ":")
        configuration.host = String(parts[0])
        configuration.port = Int(parts[1])!
        configuration.tlsCertificate = tlsCert
        configuration.tlsKey = tlsKey
        configuration.store.leaseSeconds = Int(Quantity.seconds(lease)!)
        configuration.store.heartbeatSeconds = Int(Quantity.seconds(heartbeat)!)
        configuration.store.hostTimeoutSeconds = Int(Quantity.seconds(hostTimeout)!)
        configuration.store.logLimitBytes = Quantity.bytes(logLimit)!
        configuration.store.shareHalfLifeSeconds = Double(Quantity.seconds(shareHalfLife)!)
        configuration.store.accountingIntervalSeconds = Int(Quantity.seconds(accountingInterval)!)
        configuration.store.preemptionCooldownSeconds = Int(Quantity.seconds(preemptionCooldown)!)

        let (url, embedded) = try await database.database(logger: logger)
        
        let tokenFile = adminTokenFile ?? URL(fileURLWithPath: database.dataDir!).appending(path: "admin.token").path
        do {
            // Migrate and create the first admin before anything serves or schedules.
            try await PostgresClient.with(try url.clientConfiguration(maxConnections: 2), logger: logger) { client in
                try await Migrator(logger: logger).migrate(client)
                if let token = try await Store(client: client, logger: logger).bootstrapAdmin() {
                    try AdminToken.write(token, to: tokenFile, logger: logger)
                }
            }
        } catch {
            await embedded?.stop()
            throw error
        }
        let keyPath = auditKey ?? URL(fileURLWithPath: tokenFile).deletingLastPathComponent().appending(path: "audit.key").path
        configuration.audit = AuditSigner(origin: auditOrigin, key: try AuditKey.load(keyPath, logger: logger))
        configuration.checkpointInterval = .seconds(Quantity.seconds(checkpointInterval)!)
        let client = PostgresClient(configuration: try url.clientConfiguration(maxConnections: poolSize), backgroundLogger: logger)
        let app = try buildApplication(configuration: configuration, client: client, registry: registry, logger: logger)
        logger.info("comity-server starting", metadata: ["listen": "\(listen)", "database": "\(url)"])
        do {
            try await app.runService()
        } catch {
            await embedded?.stop()
            throw error
        }
        await embedded?.stop()
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply pending migrations and exit.")

    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let logger = database.logger("comity.migrate")
        let (url, embedded) = try await database.database(logger: logger)
        
        let applied = try await PostgresClient.with(try url.clientConfiguration(maxConnections: 2), logger: logger) { client in
            try await Migrator(logger: logger).migrate(client)
        }
        await embedded?.stop()
        print(applied.isEmpty ? "database is up to date" : "applied: \(applied.joined(separator: ", "))")
    }
}

struct CreateAdminToken: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create another admin token directly in the database (recovery) and print it on the last line.")

    @OptionGroup var database: DatabaseOptions

    @Option(help: "A label for the new admin principal.")
    var name: String = "admin"

    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let logger = database.logger("comity.admin")
        let (url, embedded) = try await database.database(logger: logger)
        
        let name = self.name
        let token = try await PostgresClient.with(try url.clientConfiguration(maxConnections: 2), logger: logger) { client in
            let store = Store(client: client, logger: logger)
            try await Migrator(logger: logger).migrate(client)
            return try await client.withTransaction(logger: logger) { connection in
                try await store.createPrincipal(name: name, role: .admin, partnerID: nil, projectID: nil, hostID: nil, on: connection).token
            }
        }
        await embedded?.stop()
        print("created an admin token for \(name)")
        print(token)
    }
}

enum AuditKey {
    /// Reads the audit signing key, or creates it (mode 600) when the file does not exist.
    static func load(_ path: String, logger: Logger) throws -> Curve25519.Signing.PrivateKey {
        if let data = FileManager.default.contents(atPath: path) {
            let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard let raw = Data(base64Encoded: text), let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else {
                throw ValidationError("--audit-key: \(path) does not hold a base64 Ed25519 private key (32 bytes)")
            }
            return key
        }
        let key = Curve25519.Signing.PrivateKey()
        guard FileManager.default.createFile(
            atPath: path, contents: Data((key.rawRepresentation.base64EncodedString() + "\n").utf8), attributes: [.posixPermissions: 0o600])
        else {
            throw ValidationError("--audit-key: cannot create \(path)")
        }
        logger.notice("audit signing key created", metadata: ["path": "\(path)"])
        return key
    }
}

enum AdminToken {
    /// Writes the first admin token with mode 600; never overwrites an existing file.
    static func write(_ token: String, to path: String, logger: Logger) throws {
        var target = path
        if FileManager.default.fileExists(atPath: path) {
            target = path + ".new"
            logger.warning("admin token file exists; the new admin token goes beside it", metadata: ["path": "\(target)"])
        }
        guard FileManager.default.createFile(atPath: target, contents: Data((token + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ValidationError("cannot write the admin token to \(target)")
        }
        logger.notice("first admin token written", metadata: ["path": "\(target)"])
    }
}
