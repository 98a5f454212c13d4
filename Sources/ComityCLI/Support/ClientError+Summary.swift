import ComityClient
import Foundation

extension ClientError {
    /// The error as one line: the server's message with its field errors, or for a server that cannot be reached,
    /// `cannot reach URL: connection refused` rather than the transport's own text where the cause is a common one.
    var summary: String {
        guard status == 0 else { return description.oneLine }
        let prefix = "cannot reach "
        guard message.hasPrefix(prefix) else { return message.oneLine }
        let server = message.dropFirst(prefix.count).prefix { $0 != " " }.trimmingCharacters(
            in: CharacterSet(charactersIn: ":")
        )
        let text = message.lowercased()
        for (pattern, cause) in Self.commonCauses where text.contains(pattern) {
            return "cannot reach \(server): \(cause)"
        }
        return message.oneLine
    }

    /// Fragments of transport errors (lower-cased) and the short cause they stand for.
    private static let commonCauses = [
        ("connection refused", "connection refused"),
        ("connecttimeout", "connection timed out"),
        ("timed out", "timed out"),
        ("deadlineexceeded", "timed out"),
        ("remoteconnectionclosed", "connection closed by the server"),
        ("connection reset", "connection reset"),
        ("no such host", "unknown host"),
        ("name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("network is unreachable", "network unreachable"),
        ("certificate", "TLS certificate not trusted"),
        ("handshake", "TLS handshake failed"),
    ]
}
