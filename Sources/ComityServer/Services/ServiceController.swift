import ComityStore
import Logging
import ServiceLifecycle

/// Keeps every service's replicas running: replaces replica jobs that ended (by their restart policy, with a
/// back-off) and cancels replicas above a service's count (see ``Store/reconcileServices()``).
///
/// Any number of server replicas may run it: a round that finds another in progress skips.
struct ServiceController: Service {
    let store: Store
    let interval: Duration
    let logger: Logger

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await store.reconcileServices()
                } catch where !Task.isCancelled {
                    logger.error("service controller failed", metadata: ["error": "\(String(reflecting: error))"])
                }
                try await Task.sleep(for: interval)
            }
        }
    }
}
