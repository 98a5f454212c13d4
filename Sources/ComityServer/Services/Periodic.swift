import Logging
import ServiceLifecycle

/// Runs `step` every `interval` until graceful shutdown; a failed step is logged (as `failure`) and the loop goes on.
/// The shape of every background service that only repeats one store call.
func repeatUntilShutdown(
    every interval: Duration, logger: Logger, failure: String, _ step: @escaping @Sendable () async throws -> Void
) async {
    try? await cancelWhenGracefulShutdown {
        while !Task.isCancelled {
            do {
                try await step()
            } catch where !Task.isCancelled {
                logger.error("\(failure)", metadata: ["error": "\(String(reflecting: error))"])
            }
            try await Task.sleep(for: interval)
        }
    }
}
