import ComityCore

/// An error of the store, with a stable code that the server maps to HTTP.
package struct StoreError: Error, Sendable, CustomStringConvertible {
    package struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String { case notFound, conflict, invalid, rejected, forbidden, migration, database, embedded }
        private let base: Base
        package static let notFound = Code(base: .notFound)
        package static let conflict = Code(base: .conflict)
        package static let invalid = Code(base: .invalid)
        /// A job the rules can never admit (answered 422 with every reason).
        package static let rejected = Code(base: .rejected)
        package static let forbidden = Code(base: .forbidden)
        package static let migration = Code(base: .migration)
        package static let database = Code(base: .database)
        package static let embedded = Code(base: .embedded)
        package var description: String { base.rawValue }
    }

    package var code: Code
    package var message: String
    /// The field of the request that caused the error, when there is one.
    package var field: String?
    /// Several field errors (a rule document with many problems).
    package var fields: [FieldError]?
    /// Why the rules reject a job.
    package var reasons: [Reason]?

    package init(_ code: Code, _ message: String, field: String? = nil, fields: [FieldError]? = nil, reasons: [Reason]? = nil) {
        self.code = code
        self.message = message
        self.field = field
        self.fields = fields
        self.reasons = reasons
    }

    package var description: String { "StoreError(\(code)): \(message)" }
}
