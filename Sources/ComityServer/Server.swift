import ComityStore
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

    package init() {}
}

/// Builds the HTTP application around a running store.
///
/// - Parameters:
///   - client: the pool; added as a service so it runs as long as the application. The database must be migrated.
package func buildApplication(
    configuration: ServerConfiguration, client: PostgresClient, registry: PrometheusCollectorRegistry?, logger: Logger
) throws -> some ApplicationProtocol {
    let store = Store(client: client, configuration: configuration.store, logger: logger)
    let notifier = Notifier()
    let router = Router(context: AppContext.self)
    router.add(middleware: ErrorMiddleware())
    router.add(middleware: MetricsMiddleware())
    router.add(middleware: AuthMiddleware(store: store))
    Routes(store: store, notifier: notifier, registry: registry).addRoutes(to: router)

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
        NotificationListener(client: client, notifier: notifier, logger: logger),
        SchedulerService(store: store, notifier: notifier, interval: configuration.schedulerInterval, logger: logger),
        ReaperService(store: store, interval: configuration.reaperInterval, logger: logger))
    return app
}
