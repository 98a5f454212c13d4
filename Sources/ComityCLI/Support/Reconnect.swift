import ComityClient
import Foundation

/// Retries the calls of long waits (`submit --wait`, `logs --follow`) through short outages of the server.
enum Reconnect {
    /// How many failures in a row are tolerated before giving up (about 75 seconds of backoff in all).
    static let maxConsecutiveFailures = 8

    /// Runs `operation`, retrying with backoff while the server is unreachable or answers 502, 503 or 504.
    ///
    /// - Throws: the last error once ``maxConsecutiveFailures`` is reached, or any other error at once.
    static func retrying<Value>(_ operation: () async throws -> Value) async throws -> Value {
        var failures = 0
        var delay = 1
        while true {
            do {
                return try await operation()
            } catch let error as ClientError where isTransient(error) && failures < maxConsecutiveFailures {
                failures += 1
                Terminal.err("warning: \(error.summary); retrying in \(delay)s")
                try await Task.sleep(for: .seconds(delay))
                delay = min(delay * 2, 15)
            }
        }
    }

    static func isTransient(_ error: ClientError) -> Bool {
        error.status == 0 || error.status == 502 || error.status == 503 || error.status == 504
    }
}

extension String {
    /// The text with line breaks folded into spaces, for one-line messages.
    var oneLine: String {
        split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
    }
}
