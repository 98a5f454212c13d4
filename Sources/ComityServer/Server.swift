import ComityCore
import ComityStore
import Crypto
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOSSL
import PostgresNIO
import Prometheus
import ServiceLifecycle

/// Everything `comity-server serve` needs to know.
package struct ServerConfiguration: Sendable {
    package var host = "127.0.0.1"
    package var port = 8700
    /// PEM files; when both are set the server speaks HTTPS only.
    package var tlsCertificate: String?
    package var tlsKey: String?
    package var store = Store.Configuration()
    /// Safety-net interval of the scheduler (it runs on notifications otherwise).
    package var schedulerInterval: Duration = .seconds(2)
    package var reaperInterval: Duration = .seconds(1)
    /// Signs the audit ledger's checkpoints; every replica of one deployment uses the same key.
    package var audit = AuditSigner(origin: "comity.local/audit", key: Curve25519.Signing.PrivateKey())
    /// How often the ledger head is signed when it moved.
    package var checkpointInterval: Duration = .seconds(300)
    /// How often committed audit entries are chained (the longest an entry waits outside the chain, plus a chain's time).
    package var auditChainInterval: Duration = .milliseconds(100)

    package init() {}
}

/// The ledger's identity: its origin line (also the key name) and its Ed25519 key.
package struct AuditSigner: Sendable {
    package var origin: String
    package var key: Curve25519.Signing.PrivateKey

    package init(origin: String, key: Curve25519.Signing.PrivateKey) {
        self.origin = origin
        self.key = key
    }

    /// A signer with a fresh key (tests, tools).
    package static func ephemeral(origin: String = "comity.local/audit") -> AuditSigner {
        AuditSigner(origin: origin, key: Curve25519.Signing.PrivateKey())
    }

    package var verifierKey: String { AuditCheckpoint.verifierKey(name: origin, publicKey: key.publicKey) }

    /// Signs the current head unless the latest stored checkpoint already covers it.
    package func checkpoint(_ store: Store) async throws -> AuditCheckpoint {
        let head = try await store.auditHead()
        if let latest = try await store.latestCheckpoint(), latest.size == head.size,
            let stored = try? AuditCheckpoint.open(latest.text, key: key.publicKey, name: origin)
        {
            return stored
        }
        let checkpoint = try AuditCheckpoint.sign(origin: origin, size: head.size, root: head.root, key: key)
        try await store.saveCheckpoint(checkpoint)
        return checkpoint
    }
}

/// Builds the HTTP application around a running store.
///
/// - Parameters:
///   - client: the pool; added as a service so it runs as long as the application. The database must be migrated.
package func buildApplication(
    configuration: ServerConfiguration, client: PostgresClient, registry: PrometheusCollectorRegistry?, logger: Logger
) throws -> some ApplicationProtocol {
    let notifier = Notifier()
    // The server's own waiters hear its notifications at once; other replicas through PostgreSQL.
    let store = Store(client: client, configuration: configuration.store, logger: logger) { notice in
        NotificationListener.dispatch(channel: notice.channel, payload: notice.payload, to: notifier)
    }
    let router = Router(context: AppContext.self)
    router.add(middleware: DeniedAuditMiddleware(store: store))
    router.add(middleware: ErrorMiddleware())
    router.add(middleware: MetricsMiddleware())
    router.add(middleware: AuthMiddleware(store: store))
    Routes(store: store, notifier: notifier, registry: registry, audit: configuration.audit).addRoutes(to: router)

    var server = HTTPServerBuilder.http1()
    if let certificate = configuration.tlsCertificate, let key = configuration.tlsKey {
        let tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        server = try .tls(.http1(), tlsConfiguration: tls)
    }
    var app = Application(
        router: router, server: server,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "comity"),
        services: [client],
        logger: logger)
    app.addServices(
        NotificationListener(client: client, notifier: notifier, origin: store.noticeOrigin, logger: logger),
        SchedulerService(store: store, notifier: notifier, interval: configuration.schedulerInterval, logger: logger),
        ReaperService(
            store: store, interval: configuration.reaperInterval, logger: logger,
            accountingInterval: .seconds(max(1, configuration.store.accountingIntervalSeconds))),
        CheckpointService(store: store, signer: configuration.audit, interval: configuration.checkpointInterval, logger: logger),
        AuditSequencer(store: store, interval: configuration.auditChainInterval, logger: logger),
        ServiceController(store: store, interval: configuration.reaperInterval, logger: logger))
    return app
}
