/// Reading the `service:` block of a job file.
extension ServiceSpec {
    /// Limits on what a `service:` block may ask for.
    public enum Limits {
        public static let replicas = 1...64
        /// Replicas a scale may ask for (0 stops every replica and keeps the service).
        public static let scaleReplicas = 0...64
        public static let healthIntervalSeconds: ClosedRange<Int64> = 1...3_600
        public static let maxHealthPathBytes = 1_024
    }

    /// `0`, `1.5`, `"two"`, `a list`: a value as an error message shows it.
    static func shown(_ value: JSONValue) -> String {
        if case .number = value { return FieldReader.scalarText(value) }
        return FieldReader.describe(value)
    }

    static let fields = ["replicas", "restart", "health", "health_interval"]
    static let healthFields = ["http", "command"]

    /// Reads `service:` of a job document into `reader`'s errors.
    ///
    /// - Returns: the spec for `kind: inference` (defaults when the block is absent), `nil` for batch jobs and on
    ///   errors. A `service:` block on a batch job is an error naming the field.
    static func read(_ value: JSONValue?, kind: JobKind, reader: inout FieldReader) -> ServiceSpec? {
        switch value {
        case nil, .null:
            return kind == .inference ? ServiceSpec() : nil
        case .object(let object):
            guard kind == .inference else {
                reader.fail("service", "only for kind: inference (a service); this job's kind is \(kind.rawValue)")
                return nil
            }
            var sub = FieldReader(object: object, prefix: "service.", errors: [])
            sub.rejectUnknown(allowed: fields)
            var spec = ServiceSpec()
            switch object["replicas"] {
            case nil, .null: break
            case .number(let number) where number.rounded() == number && Limits.replicas.contains(Int(exactly: number) ?? .min):
                spec.replicas = Int(number)
            case let other?:
                sub.fail("replicas", "expected \(Limits.replicas.lowerBound) to \(Limits.replicas.upperBound), got \(shown(other))")
            }
            if let text = sub.optionalString("restart") {
                if let policy = RestartPolicy(rawValue: text) {
                    spec.restart = policy
                } else {
                    sub.fail("restart", "expected one of always, on-failure, never, got \"\(text)\"")
                }
            }
            switch object["health"] {
            case nil, .null: break
            case .object(let health):
                var check = FieldReader(object: health, prefix: "service.health.", errors: [])
                check.rejectUnknown(allowed: healthFields)
                if health["http"] != nil, health["command"] != nil {
                    sub.fail("health", "expected one of http or command, not both")
                } else if health["http"] == nil, health["command"] == nil {
                    sub.fail("health", "expected {http: /path} or {command: [...]}")
                } else if health["http"] != nil {
                    if let path = check.optionalString("http") {
                        if !path.hasPrefix("/") || path.utf8.count > Limits.maxHealthPathBytes || path.contains(where: \.isWhitespace) {
                            check.fail("http", "expected a path starting with \"/\" without spaces (at most \(Limits.maxHealthPathBytes) bytes), got \"\(path)\"")
                        } else {
                            spec.healthPath = path
                        }
                    }
                } else {
                    spec.healthCommand = check.command("command")
                }
                sub.errors += check.errors
            case let other?:
                sub.fail("health", "expected {http: /path} or {command: [...]}, got \(other.typeName)")
            }
            switch object["health_interval"] {
            case nil, .null: break
            case .string(let text):
                if let seconds = Quantity.seconds(text), Limits.healthIntervalSeconds.contains(seconds) {
                    spec.healthIntervalSeconds = Int(seconds)
                } else {
                    sub.fail("health_interval", "expected a duration like \"5s\" or \"1m\" from 1s to 1h, got \"\(text)\"")
                }
            case .number(let number) where number.rounded() == number && Limits.healthIntervalSeconds.contains(Int64(exactly: number) ?? .min):
                spec.healthIntervalSeconds = Int(number)
            case let other?:
                sub.fail("health_interval", "expected a duration like \"5s\" or \"1m\" from 1s to 1h, got \(shown(other))")
            }
            reader.errors += sub.errors
            return sub.errors.isEmpty ? spec : nil
        case let other?:
            if kind != .inference {
                reader.fail("service", "only for kind: inference (a service); this job's kind is \(kind.rawValue)")
            } else {
                reader.fail("service", "expected a mapping like {replicas: 2, health: {http: /healthz}}, got \(other.typeName)")
            }
            return nil
        }
    }
}
