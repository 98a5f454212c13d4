import ComityStore
import Logging
import ServiceLifecycle

/// Chains the audit entries that changes committed (``Store/chainAudit(batch:)``) every `interval`, so that the
/// chain trails the changes by at most about that long. Reads of the ledger chain first, so they never miss an entry.
///
/// Any number of replicas may run this: the ledger's advisory lock serializes the chainers.
struct AuditSequencer: Service {
    let store: Store
    let interval: Duration
    let logger: Logger

    func run() async throws {
        await repeatUntilShutdown(every: interval, logger: logger, failure: "chaining audit entries failed") {
            try await store.chainAudit()
        }
        // Whatever committed before the shutdown is chained before the server exits.
        try? await store.chainAudit()
    }
}
