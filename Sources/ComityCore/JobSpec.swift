/// The kind of work a job is.
public enum JobKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// A batch job that runs to completion.
    case training
    /// A long-running service.
    case inference
}

/// A validated job submission.
public struct JobSpec: Sendable, Hashable, Codable {
    public var name: String
    public var project: String
    public var kind: JobKind
    public var command: [String]
    public var env: [String: String]
    public var resources: ResourceRequest
    public var inputs: [String]
    public var outputs: [String]
    public var maxRuntimeSeconds: Int64
    public var retries: Int
    public var priority: Int
    /// Whether a reclaim may preempt it when it runs as a borrowing guest (`nil`: batch jobs may be, services not).
    public var preemptible: Bool?
    /// Whether it needs the network (the sandbox runner cuts it off otherwise; data rules may forbid it).
    public var network: Bool?
    /// A container image, for hosts with the container runner.
    public var image: String?
    /// How an inference job runs as a service (port, health check, replicas, restarts); `nil` for batch jobs.
    public var service: ServiceSpec?

    /// Batch jobs are preemptible unless they say otherwise; services only if they opt in.
    public var isPreemptible: Bool { preemptible ?? (kind != .inference) }

    public init(
        name: String, project: String, kind: JobKind = .training, command: [String], env: [String: String] = [:],
        resources: ResourceRequest, inputs: [String] = [], outputs: [String] = [], maxRuntimeSeconds: Int64 = 86_400,
        retries: Int = 0, priority: Int = 50, preemptible: Bool? = nil, network: Bool? = nil, image: String? = nil,
        service: ServiceSpec? = nil
    ) {
        self.preemptible = preemptible
        self.network = network
        self.image = image
        self.service = service
        self.name = name
        self.project = project
        self.kind = kind
        self.command = command
        self.env = env
        self.resources = resources
        self.inputs = inputs
        self.outputs = outputs
        self.maxRuntimeSeconds = maxRuntimeSeconds
        self.retries = retries
        self.priority = priority
    }
}

/// How a service (`kind: inference`) runs: the agent gives each replica a free port (`PORT`), checks its health,
/// and restarts it by its policy; the scheduler keeps `replicas` copies running on distinct hosts.
public struct ServiceSpec: Sendable, Hashable, Codable {
    /// When the agent restarts a replica whose process ended.
    public enum RestartPolicy: String, Sendable, Hashable, Codable, CaseIterable {
        case always
        case onFailure = "on-failure"
        case never
    }

    /// How many copies run, each on its own host.
    public var replicas: Int
    public var restart: RestartPolicy
    /// `GET http://127.0.0.1:PORT<httpPath>` answering 2xx means healthy.
    public var healthPath: String?
    /// A command exiting 0 means healthy (run in the replica's work folder with its environment).
    public var healthCommand: [String]?
    /// Seconds between health checks.
    public var healthIntervalSeconds: Int

    public init(
        replicas: Int = 1, restart: RestartPolicy = .always, healthPath: String? = nil, healthCommand: [String]? = nil,
        healthIntervalSeconds: Int = 5
    ) {
        self.replicas = replicas
        self.restart = restart
        self.healthPath = healthPath
        self.healthCommand = healthCommand
        self.healthIntervalSeconds = healthIntervalSeconds
    }
}

extension JobSpec {
    /// Limits on what a job file may ask for.
    public enum Limits {
        public static let maxRetries = 20
        public static let priorityRange = 0...1000
        public static let maxRuntimeSeconds: Int64 = 30 * 86_400
        public static let maxCommandBytes = 64 * 1024
        public static let maxEnvEntries = 256
        public static let maxGPUs = 64
        public static let defaultMaxRuntimeSeconds: Int64 = 86_400
    }

    static let fields = [
        "name", "project", "kind", "command", "env", "resources", "inputs", "outputs", "max_runtime", "retries",
        "priority", "preemptible", "network", "service", "image",
    ]
    static let resourceFields = ["cpus", "memory", "gpus", "gpu_model", "gpu_memory"]

    /// Validates a job document (decoded from YAML or JSON) and returns the spec, or every problem found.
    ///
    /// Unknown fields are errors (a typo must not silently drop a constraint), with a suggestion when close.
    public static func validate(_ document: JSONValue) -> Result<JobSpec, ValidationFailure> {
        var errors: [FieldError] = []
        guard case .object(let object) = document else {
            return .failure(ValidationFailure([FieldError(field: "(document)", message: "expected a mapping of job fields, got \(document.typeName)")]))
        }
        var reader = FieldReader(object: object, prefix: "", errors: [])
        reader.rejectUnknown(allowed: fields)

        let name = reader.requiredString("name", pattern: .identifier)
        let project = reader.requiredString("project", pattern: .identifier)
        var kind = JobKind.training
        if let text = reader.optionalString("kind") {
            if let parsed = JobKind(rawValue: text) {
                kind = parsed
            } else {
                reader.fail("kind", "expected one of training, inference, got \"\(text)\"")
            }
        }
        let command = reader.command("command")
        let env = reader.env("env")
        let inputs = reader.nameList("inputs")
        let outputs = reader.nameList("outputs")
        var maxRuntime = Limits.defaultMaxRuntimeSeconds
        if let value = object["max_runtime"] {
            switch value {
            case .string(let text):
                if let seconds = Quantity.seconds(text), seconds <= Limits.maxRuntimeSeconds {
                    maxRuntime = seconds
                } else {
                    reader.fail("max_runtime", "expected a duration like \"12h\" or \"30m\" up to 30d, got \"\(text)\"")
                }
            case .number(let number) where number >= 1 && number.rounded() == number && number <= Double(Limits.maxRuntimeSeconds):
                maxRuntime = Int64(number)
            default:
                reader.fail("max_runtime", "expected a duration like \"12h\" or \"30m\" up to 30d, got \(value.typeName)")
            }
        }
        let retries = reader.integer("retries", range: 0...Limits.maxRetries) ?? 0
        let priority = reader.integer("priority", range: Limits.priorityRange) ?? 50
        var preemptible: Bool?
        switch object["preemptible"] {
        case nil, .null: break
        case .bool(let flag): preemptible = flag
        case let other?: reader.fail("preemptible", "expected true or false, got \(other.typeName)")
        }
        var network: Bool?
        switch object["network"] {
        case nil, .null: break
        case .bool(let flag): network = flag
        case let other?: reader.fail("network", "expected true or false, got \(other.typeName)")
        }

        var resources = ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30)
        switch object["resources"] {
        case nil, .null:
            break
        case .object(let resourceObject):
            var sub = FieldReader(object: resourceObject, prefix: "resources.", errors: [])
            sub.rejectUnknown(allowed: resourceFields)
            resources = sub.resources(default: resources)
            reader.errors += sub.errors
        case let other?:
            reader.fail("resources", "expected a mapping like {cpus: 8, memory: 64Gi, gpus: 2}, got \(other.typeName)")
        }
        let service = ServiceSpec.read(object["service"], kind: kind, reader: &reader)
        let image = reader.image("image")
        errors += reader.errors

        guard errors.isEmpty, let name, let project, let command else {
            return .failure(ValidationFailure(errors))
        }
        return .success(
            JobSpec(
                name: name, project: project, kind: kind, command: command, env: env, resources: resources,
                inputs: inputs, outputs: outputs, maxRuntimeSeconds: maxRuntime, retries: retries, priority: priority,
                preemptible: preemptible, network: network, image: image, service: service
            )
        )
    }
}

/// Reads typed fields out of a mapping and collects field-level errors.
struct FieldReader {
    enum Pattern {
        /// Letters, digits, `-`, `_`, `.`; starts with a letter or digit; at most 128 characters.
        case identifier
    }

    let object: [String: JSONValue]
    let prefix: String
    var errors: [FieldError]

    mutating func fail(_ field: String, _ message: String) {
        errors.append(FieldError(field: prefix + field, message: message))
    }

    mutating func rejectUnknown(allowed: [String]) {
        for key in object.keys.sorted() where !allowed.contains(key) {
            if let guess = Suggestion.closest(to: key, among: allowed) {
                fail(key, "unknown field; did you mean \"\(guess)\"?")
            } else {
                fail(key, "unknown field; expected one of \(allowed.joined(separator: ", "))")
            }
        }
    }

    static func isIdentifier(_ text: String) -> Bool { Name.isValid(text) }

    mutating func requiredString(_ field: String, pattern: Pattern) -> String? {
        guard let value = object[field], value != .null else {
            fail(field, "required; expected a name such as \"swahili-asr\"")
            return nil
        }
        guard case .string(let text) = value else {
            fail(field, "expected a string, got \(value.typeName)")
            return nil
        }
        guard Self.isIdentifier(text) else {
            fail(field, "expected letters, digits, '-', '_' or '.' (at most 128, starting with a letter or digit), got \"\(text)\"")
            return nil
        }
        return text
    }

    mutating func optionalString(_ field: String) -> String? {
        switch object[field] {
        case nil, .null: return nil
        case .string(let text): return text
        case let other?:
            fail(field, "expected a string, got \(other.typeName)")
            return nil
        }
    }

    /// A container image reference (`python:3.12`, `ghcr.io/org/train@sha256:…`): letters, digits and `._-/:@`, up
    /// to 255 characters, starting with a letter or digit.
    mutating func image(_ field: String) -> String? {
        guard let text = optionalString(field) else { return nil }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@")
        guard let first = text.first, first.isLetter || first.isNumber, text.count <= 255, text.allSatisfy(allowed.contains)
        else {
            fail(field, "expected a container image reference like \"python:3.12\" or \"ghcr.io/org/train:v1\", got \"\(text)\"")
            return nil
        }
        return text
    }

    mutating func command(_ field: String) -> [String]? {
        switch object[field] {
        case nil, .null:
            fail(field, "required; expected a list of strings such as [\"python3\", \"train.py\"]")
            return nil
        case .string(let line):
            guard !line.trimmingSpaces.isEmpty else {
                fail(field, "expected a non-empty command")
                return nil
            }
            guard line.utf8.count <= JobSpec.Limits.maxCommandBytes else {
                fail(field, "expected at most \(JobSpec.Limits.maxCommandBytes) bytes in total")
                return nil
            }
            return ["/bin/sh", "-c", line]
        case .array(let items):
            var words: [String] = []
            for (index, item) in items.enumerated() {
                switch item {
                case .string(let word): words.append(word)
                // YAML reads `[train.py, --epochs, 3]` with a number; a command word is its text.
                case .number, .bool: words.append(Self.scalarText(item))
                default: fail("\(field)[\(index)]", "expected a string, got \(item.typeName)")
                }
            }
            if items.isEmpty { fail(field, "expected at least one word (the program to run)") }
            if words.reduce(0, { $0 + $1.utf8.count }) > JobSpec.Limits.maxCommandBytes {
                fail(field, "expected at most \(JobSpec.Limits.maxCommandBytes) bytes in total")
            }
            return words.count == items.count && !items.isEmpty ? words : nil
        case let other?:
            fail(field, "expected a list of strings such as [\"python3\", \"train.py\"], got \(other.typeName)")
            return nil
        }
    }

    mutating func env(_ field: String) -> [String: String] {
        switch object[field] {
        case nil, .null: return [:]
        case .object(let entries):
            var env: [String: String] = [:]
            if entries.count > JobSpec.Limits.maxEnvEntries {
                fail(field, "expected at most \(JobSpec.Limits.maxEnvEntries) variables")
            }
            for (key, value) in entries.sorted(by: { $0.key < $1.key }) {
                let validKey = !key.isEmpty && key.unicodeScalars.allSatisfy { $0 == "_" || ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
                    && !("0"..."9").contains(key.unicodeScalars.first!)
                if !validKey {
                    fail("\(field).\(key)", "expected a variable name of letters, digits and '_'")
                    continue
                }
                if key.hasPrefix("COMITY_") {
                    fail("\(field).\(key)", "the COMITY_ prefix is reserved for variables the agent sets")
                    continue
                }
                switch value {
                case .string(let text): env[key] = text
                case .number, .bool: env[key] = Self.scalarText(value)
                default: fail("\(field).\(key)", "expected a string, got \(value.typeName)")
                }
            }
            return env
        case let other?:
            fail(field, "expected a mapping of variable names to strings, got \(other.typeName)")
            return [:]
        }
    }

    static func scalarText(_ value: JSONValue) -> String {
        switch value {
        case .bool(let flag): return flag ? "true" : "false"
        case .number(let number): return number.rounded() == number && abs(number) < 1e15 ? "\(Int64(number))" : "\(number)"
        case .string(let text): return text
        default: return ""
        }
    }

    mutating func nameList(_ field: String) -> [String] {
        switch object[field] {
        case nil, .null: return []
        case .array(let items):
            var names: [String] = []
            for (index, item) in items.enumerated() {
                guard case .string(let name) = item, Self.isIdentifier(name) else {
                    fail("\(field)[\(index)]", "expected a dataset name (letters, digits, '-', '_', '.'), got \(item.typeName == "a string" ? "\"\(Self.scalarText(item))\"" : item.typeName)")
                    continue
                }
                if names.contains(name) {
                    fail("\(field)[\(index)]", "\"\(name)\" is listed twice")
                    continue
                }
                names.append(name)
            }
            return names
        case let other?:
            fail(field, "expected a list of dataset names, got \(other.typeName)")
            return []
        }
    }

    mutating func integer(_ field: String, range: ClosedRange<Int>) -> Int? {
        switch object[field] {
        case nil, .null: return nil
        case .number(let number) where number.rounded() == number && range.contains(Int(exactly: number) ?? .min):
            return Int(number)
        case let other?:
            let shown = if case .number(let n) = other { "\(n)" } else { other.typeName }
            fail(field, "expected a whole number from \(range.lowerBound) to \(range.upperBound), got \(shown)")
            return nil
        }
    }

    mutating func resources(default base: ResourceRequest) -> ResourceRequest {
        var resources = base
        switch object["cpus"] {
        case nil, .null: break
        case .number(let cpus) where cpus >= 0.001 && cpus <= 4096:
            resources.cpuMillis = Int((cpus * 1000).rounded())
        case .string(let text) where Double(text).map { $0 >= 0.001 && $0 <= 4096 } ?? false:
            resources.cpuMillis = Int((Double(text)! * 1000).rounded())
        case let other?:
            fail("cpus", "expected a number of CPUs from 0.001 to 4096 (e.g. 8 or 0.5), got \(Self.describe(other))")
        }
        if let bytes = size("memory", required: false) {
            if bytes == 0 { fail("memory", "expected more than 0 bytes") } else { resources.memoryBytes = bytes }
        }
        if let gpus = integer("gpus", range: 0...JobSpec.Limits.maxGPUs) { resources.gpus = gpus }
        if let model = optionalString("gpu_model") {
            if model.trimmingSpaces.isEmpty || model.count > 64 {
                fail("gpu_model", "expected a GPU model name such as \"H100\", got \"\(model)\"")
            } else {
                resources.gpuModel = model.trimmingSpaces
            }
        }
        if let bytes = size("gpu_memory", required: false) { resources.gpuMemoryBytes = bytes }
        if resources.gpus == 0 && (resources.gpuModel != nil || resources.gpuMemoryBytes != nil) {
            fail("gpus", "expected at least 1 when gpu_model or gpu_memory is set")
        }
        return resources
    }

    mutating func size(_ field: String, required: Bool) -> Int64? {
        switch object[field] {
        case nil, .null:
            if required { fail(field, "required; expected a size like \"64Gi\"") }
            return nil
        case .string(let text):
            if let bytes = Quantity.bytes(text) { return bytes }
            fail(field, "expected a size like \"64Gi\", \"512Mi\" or \"80G\", got \"\(text)\"")
            return nil
        case .number(let number) where number >= 0 && number.rounded() == number && number < 9e18:
            return Int64(number)
        case let other?:
            fail(field, "expected a size like \"64Gi\", \"512Mi\" or \"80G\", got \(Self.describe(other))")
            return nil
        }
    }

    static func describe(_ value: JSONValue) -> String {
        switch value {
        case .string(let text): "\"\(text)\""
        case .number(let number): "\(number)"
        default: value.typeName
        }
    }
}
