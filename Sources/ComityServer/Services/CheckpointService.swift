import ComityCore
import ComityStore
import Logging
import ServiceLifecycle

/// Signs the ledger head on a schedule (when it moved); `GET /v1/audit/checkpoint` also signs on demand.
struct CheckpointService: Service {
    let store: Store
    let signer: AuditSigner
    let interval: Duration
    let logger: Logger

    func run() async throws {
        await repeatUntilShutdown(every: interval, logger: logger, failure: "audit checkpoint failed") { [store, signer, logger] in
            let checkpoint = try await signer.checkpoint(store)
            logger.debug("audit checkpoint", metadata: ["size": "\(checkpoint.size)"])
        }
    }
}
