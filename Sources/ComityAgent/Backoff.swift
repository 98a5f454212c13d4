/// Exponential backoff with jitter for reconnecting: 100 ms, 200 ms, 400 ms, … capped (5 s by default).
package struct Backoff: Sendable {
    package var initial: Duration
    package var cap: Duration
    private var attempt = 0

    package init(initial: Duration = .milliseconds(100), cap: Duration = .seconds(5)) {
        self.initial = initial
        self.cap = cap
    }

    /// The delay before the next try: the exponential step, capped, scaled by a random factor in 0.5…1.
    package mutating func next() -> Duration {
        let step = min(initial * (1 << min(attempt, 30)), cap)
        attempt += 1
        return step * Double.random(in: 0.5...1)
    }

    /// Starts over after a success.
    package mutating func reset() { attempt = 0 }

    /// Failures since the last success (delays handed out since ``reset()``).
    package var failures: Int { attempt }

    /// Whether the latest failure deserves a warning: the first of a streak and every 20th, so that an outage is
    /// visible without a line per retry (the others are logged at debug level).
    package var isWorthWarning: Bool { attempt == 1 || attempt % 20 == 0 }
}
