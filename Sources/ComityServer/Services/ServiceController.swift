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
        await repeatUntilShutdown(every: interval, logger: logger, failure: "service controller failed") {
            _ = try await store.reconcileServices()
        }
    }
}
