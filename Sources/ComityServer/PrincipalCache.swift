import ComityStore
import Synchronization

/// Remembers resolved tokens for a few seconds, so that an agent's heartbeats, polls and reports do not each cost a
/// database lookup. Unknown tokens are never cached (a new token works at once); a revoked token keeps working
/// for at most `ttl` on the replicas that saw it.
final class PrincipalCache: Sendable {
    private struct Entry {
        var principal: Principal
        var expires: ContinuousClock.Instant
    }

    private let entries = Mutex<[String: Entry]>([:])
    let ttl: Duration
    let capacity: Int

    init(ttl: Duration = .seconds(10), capacity: Int = 50_000) {
        self.ttl = ttl
        self.capacity = capacity
    }

    func principal(for token: String, now: ContinuousClock.Instant = .now) -> Principal? {
        entries.withLock { entries in
            guard let entry = entries[token] else { return nil }
            guard entry.expires > now else {
                entries[token] = nil
                return nil
            }
            return entry.principal
        }
    }

    func remember(_ principal: Principal, for token: String, now: ContinuousClock.Instant = .now) {
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[token] = Entry(principal: principal, expires: now + ttl)
        }
    }
}
