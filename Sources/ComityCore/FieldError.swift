/// One problem with one field of a document, e.g. `resources.memory: expected a size like "64Gi", got "lots"`.
public struct FieldError: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The dotted path of the field (`resources.gpus`, `command[0]`).
    public var field: String
    /// What was expected and what was found.
    public var message: String

    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { "\(field): \(message)" }
}

/// A document that failed validation, with every problem found.
public struct ValidationFailure: Error, Sendable, CustomStringConvertible {
    public var errors: [FieldError]

    public init(_ errors: [FieldError]) { self.errors = errors }

    public var description: String { errors.map(\.description).joined(separator: "; ") }
}
