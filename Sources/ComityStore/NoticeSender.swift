import Logging
import PostgresNIO
import Synchronization

/// Sends `NOTIFY`s about changes that have already committed, batched, in statements of their own.
///
/// Why not in the change's own transaction: PostgreSQL serializes the commits of all transactions that notify (each
/// holds a database-wide lock from before its commit record until after it is flushed), so starts and ends that
/// notified could only commit one fsync after another, never in a group. A notification sent after the commit says
/// the same thing to a listener (which re-reads the state anyway), and sending it with `synchronous_commit` off costs
/// no fsync: a notification lost in a crash is lost either way, and every waiter also re-checks on a timer.
///
/// Callers that arrive while a batch is being sent wait for the next one, which carries all of theirs at once; the
/// first of them sends it. `send` returns once its notices were handed to PostgreSQL (or that failed and was logged).
package final class NoticeSender: Sendable {
    package struct Notice: Hashable, Sendable {
        package var channel: String
        package var payload: String

        package init(_ channel: String, _ payload: String = "") {
            self.channel = channel
            self.payload = payload
        }
    }

    private enum Turn { case lead, done }

    private struct State {
        var pending: [Notice] = []
        var waiters: [CheckedContinuation<Turn, Never>] = []
        var sending = false
    }

    private let state = Mutex(State())
    private let client: PostgresClient
    private let logger: Logger
    /// Delivery inside this process, before the notification's round trip through PostgreSQL (the server's own
    /// waiters); other replicas hear it from PostgreSQL.
    private let local: (@Sendable (Notice) -> Void)?
    /// With local delivery, payloads sent through PostgreSQL carry this sender's tag (`@<origin>:`), so that this
    /// process's listener can skip what it already delivered (one wake-up per change, not two).
    package let origin: String?

    package init(client: PostgresClient, logger: Logger, local: (@Sendable (Notice) -> Void)? = nil) {
        self.client = client
        self.logger = logger
        self.local = local
        origin = local == nil ? nil : String(UInt64.random(in: 1...UInt64.max), radix: 36)
    }

    /// A payload as received by a listener: `nil` when `origin` (the listener's own sender) sent it, else the payload
    /// without any sender's tag.
    package static func received(_ payload: String, skipping origin: String?) -> String? {
        guard payload.hasPrefix("@"), let colon = payload.firstIndex(of: ":") else { return payload }
        let sender = payload[payload.index(after: payload.startIndex)..<colon]
        if let origin, sender == origin { return nil }
        return String(payload[payload.index(after: colon)...])
    }

    /// Sends `notices` (their changes must have committed).
    package func send(_ notices: [Notice]) async {
        guard !notices.isEmpty else { return }
        if let local { for notice in notices { local(notice) } }
        let turn = await withCheckedContinuation { (continuation: CheckedContinuation<Turn, Never>) in
            let lead = state.withLock { state -> Bool in
                state.pending += notices
                if state.sending {
                    state.waiters.append(continuation)
                    return false
                }
                state.sending = true
                return true
            }
            if lead { continuation.resume(returning: .lead) }
        }
        guard turn == .lead else { return }
        // Send everything pending, answer those it covered, and hand the next batch to the first caller waiting.
        let (batch, covered) = state.withLock { state in
            defer {
                state.pending = []
                state.waiters = []
            }
            return (state.pending, state.waiters)
        }
        // Apart from this caller's task, so that its cancellation cannot drop the others' notifications.
        await Task { await self.deliver(batch) }.value
        for waiter in covered { waiter.resume(returning: .done) }
        let next = state.withLock { state -> CheckedContinuation<Turn, Never>? in
            if state.waiters.isEmpty {
                state.sending = false
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume(returning: .lead)
    }

    private func deliver(_ batch: [Notice]) async {
        var seen = Set<Notice>()
        let tag = origin.map { "@\($0):" } ?? ""
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
