import ComityStore
import Logging
import PostgresNIO
import ServiceLifecycle

/// Holds one connection that `LISTEN`s on Comity's channels and forwards each notification to the ``Notifier``.
/// Reconnects with backoff; after every (re)connect all waiters re-check, since notifications may have been lost.
struct NotificationListener: Service {
    let client: PostgresClient
    let notifier: Notifier
    /// This server's notice sender: what it sent was already delivered inside the process.
    let origin: String?
    let logger: Logger

    func run() async throws {
        // On graceful shutdown, long-polls answer at once instead of holding the server for their full wait.
        defer { notifier.shutDown() }
        try? await cancelWhenGracefulShutdown {
            var backoff = Duration.milliseconds(100)
            while !Task.isCancelled {
                do {
                    try await client.withConnection { connection in
                        try await withThrowingTaskGroup(of: Void.self) { group in
                            for channel in [Store.Channel.assign, Store.Channel.job, Store.Channel.scheduler] {
                                group.addTask {
                                    try await connection.listen(on: channel) { notifications in
                                        // Listening now: whoever waits re-checks, since notifications sent before
                                        // this point (while disconnected or starting) were not seen.
                                        notifier.notifyAll()
                                        for try await notification in notifications {
                                            guard let payload = NoticeSender.received(notification.payload, skipping: origin) else { continue }
                                            Self.dispatch(channel: channel, payload: payload, to: notifier)
                                        }
                                    }
                                }
                            }
                            try await group.next()
                            group.cancelAll()
                        }
                    }
                    backoff = .milliseconds(100)
                } catch where !Task.isCancelled {
                    logger.warning("listen connection lost; reconnecting", metadata: ["error": "\(error)"])
                    try await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(5))
                }
            }
        }
    }

    static func dispatch(channel: String, payload: String, to notifier: Notifier) {
        switch channel {
        case Store.Channel.assign:
            for id in payload.split(separator: ",").compactMap({ Int64($0) }) { notifier.notify(.host(id)) }
        case Store.Channel.job:
            if let id = Int64(payload) { notifier.notify(.job(id)) }
        default:
            notifier.notify(.scheduler)
        }
    }
}
