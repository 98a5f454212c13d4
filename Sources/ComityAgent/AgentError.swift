/// Why the agent cannot go on, phrased for the operator who reads it.
package struct AgentError: Error, Sendable, CustomStringConvertible {
    package struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String { case configuration, unauthorized, enrollment, inventory }
        private let base: Base

        /// Bad flags, files or state folder.
        package static let configuration = Code(base: .configuration)
        /// The server rejected the agent's credential (HTTP 401).
        package static let unauthorized = Code(base: .unauthorized)
        /// Enrollment with the join token failed.
        package static let enrollment = Code(base: .enrollment)
        /// The host's resources could not be determined.
        package static let inventory = Code(base: .inventory)

        package var description: String { base.rawValue }
    }

    package var code: Code
    package var message: String

    package init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    package var description: String { message }
}
