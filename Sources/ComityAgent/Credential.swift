import ComityAPI
import Foundation

/// What enrollment gave this agent, kept in `DIR/credential.json` (mode 600).
package struct Credential: Codable, Sendable, Hashable, CustomStringConvertible {
    /// The server that issued the credential.
    package var server: String
    package var hostId: Int64
    package var hostName: String
    /// The bearer token of every call after enrollment.
    package var token: String
    package var heartbeatSeconds: Int
    package var leaseSeconds: Int
    package var enrolledAt: Date

    package init(server: String, enrollment: EnrollResponse, enrolledAt: Date) {
        self.server = server
        self.hostId = enrollment.hostId
        self.hostName = enrollment.hostName
        self.token = enrollment.token
        self.heartbeatSeconds = enrollment.heartbeatSeconds
        self.leaseSeconds = enrollment.leaseSeconds
        self.enrolledAt = enrolledAt
    }

    /// Redacts the token.
    package var description: String { "Credential(server: \(server), host: \(hostName) #\(hostId), token: <redacted>)" }

    /// Reads the credential; `nil` when the file does not exist.
    ///
    /// - Throws: when the file exists but cannot be read or decoded (it is never silently replaced).
    package static func load(from path: String) throws -> Credential? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AgentError(.configuration, "cannot read \(path)")
        }
        do {
            return try WireJSON.decoder().decode(Credential.self, from: data)
        } catch {
            throw AgentError(
                .configuration,
                "\(path) is not a valid agent credential (\(error)); move it away to enroll again"
            )
        }
    }

    /// Writes the credential atomically with mode 600.
    package func save(to path: String) throws {
        let encoder = WireJSON.encoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        try StateDirectory.writePrivately(try encoder.encode(self), to: path)
    }
}
