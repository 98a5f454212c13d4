import Logging
import ServiceLifecycle
import UnixSignals

extension AgentService {
    /// Runs the agent in a `ServiceGroup` that shuts it down gracefully on `SIGTERM` or `SIGINT`, and returns when
    /// it has stopped.
    ///
    /// Graceful shutdown may take the kill grace plus 30 s (stopping jobs and reporting them); after that the agent
    /// is cancelled, which still kills every job's process group.
    ///
    /// - Throws: ``AgentError`` when the agent cannot run (bad configuration, enrollment refused, 401).
    package func runInServiceGroup() async throws {
        var configuration = ServiceGroupConfiguration(
            services: [self],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        configuration.maximumGracefulShutdownDuration = self.configuration.killGrace + .seconds(30)
        try await ServiceGroup(configuration: configuration).run()
    }
}
