import ComityCore
import Logging
import PostgresNIO

/// Sends `NOTIFY`s about changes that have already committed, batched, in statements of their own.
///
/// Why not in the change's own transaction: PostgreSQL serializes the commits of all transactions that notify (each
/// holds a database-wide lock from before its commit record until after it is flushed), so starts and ends that
/// notified could only commit one fsync after another, never in a group. A notification sent after the commit says
/// the same thing to a listener (which re-reads the state anyway), and sending it with `synchronous_commit` off costs
/// no fsync: a notification lost in a crash is lost either way, and every waiter also re-checks on a timer.
///
/// Callers that arrive while a batch is being sent wait for the next one, which carries all of theirs at once
/// (``Batcher``).
package final class NoticeSender: Sendable {
    package struct Notice: Hashable, Sendable {
        package var channel: String
        package var payload: String

        package init(_ channel: String, _ payload: String = "") {
            self.channel = channel
            self.payload = payload
        }
    }

    private let local: (@Sendable (Notice) -> Void)?
    /// With local delivery, payloads sent through PostgreSQL carry this sender's tag (`@<origin>:`), so that this
    /// process's listener can skip what it already delivered (one wake-up per change, not two).
    package let origin: String?
    /// Each caller's notices; callers that arrive together share one statement.
    private let batches: Batcher<[Notice], Void>

    package init(client: PostgresClient, logger: Logger, local: (@Sendable (Notice) -> Void)? = nil) {
        self.local = local
        let origin = local == nil ? nil : String(UInt64.random(in: 1...UInt64.max), radix: 36)
        self.origin = origin
        batches = Batcher(limit: 1_000) { batch in
            await Self.deliver(batch.flatMap { $0 }, tag: origin.map { "@\($0):" } ?? "", client: client, logger: logger)
            return batch.map { _ in () }
        }
    }

    /// A payload as received by a listener: `nil` when `origin` (the listener's own sender) sent it, else the payload
    /// without any sender's tag.
    package static func received(_ payload: String, skipping origin: String?) -> String? {
        guard payload.hasPrefix("@"), let colon = payload.firstIndex(of: ":") else { return payload }
        let sender = payload[payload.index(after: payload.startIndex)..<colon]
        if let origin, sender == origin { return nil }
        return String(payload[payload.index(after: colon)...])
    }

    /// Sends `notices` (their changes must have committed); returns once they were handed to PostgreSQL (or that
    /// failed and was logged).
    package func send(_ notices: [Notice]) async {
        guard !notices.isEmpty else { return }
        if let local { for notice in notices { local(notice) } }
        try? await batches.submit(notices)
    }

    private static func deliver(_ batch: [Notice], tag: String, client: PostgresClient, logger: Logger) async {
        var seen = Set<Notice>()
        let unique = batch.filter { seen.insert($0).inserted }.map { Notice($0.channel, tag + $0.payload) }
        do {
            // `true`: for this statement's own (implicit) transaction only; a test checks that the connection keeps
            // synchronous commits afterwards.
            try await client.query(
                """
                select set_config('synchronous_commit', 'off', true),
                       (select count(pg_notify(n.c, n.p)) from unnest(\(unique.map(\.channel))::text[], \(unique.map(\.payload))::text[]) as n(c, p))
                """, logger: logger)
        } catch {
            logger.warning("notifications not sent; listeners fall back to their timers", metadata: ["error": "\(String(reflecting: error))"])
        }
    }
}
