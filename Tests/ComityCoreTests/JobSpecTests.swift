import ComityCore
import Foundation
import Testing

/// Builds `JSONValue` documents the way the server sees them: decoded from JSON text.
private func json(_ text: String) throws -> JSONValue {
    try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
}

/// A minimal valid document, as a mapping, to which a test adds or replaces one field.
private let minimalJob: [String: JSONValue] = [
    "name": .string("asr"),
    "project": .string("swahili"),
    "command": .array([.string("python3"), .string("train.py")]),
]

private func minimal(with changes: [String: JSONValue]) -> JSONValue {
    .object(minimalJob.merging(changes) { _, new in new })
}

private func minimal(without field: String) -> JSONValue {
    var object = minimalJob
    object[field] = nil
    return .object(object)
}

private func resources(_ fields: [String: JSONValue]) -> JSONValue {
    minimal(with: ["resources": .object(fields)])
}

extension Result where Success == JobSpec, Failure == ValidationFailure {
    var errors: [FieldError] {
        if case .failure(let failure) = self { failure.errors } else { [] }
    }
    var spec: JobSpec? {
        if case .success(let spec) = self { spec } else { nil }
    }
}

@Suite("JobSpec.validate")
struct JobSpecTests {
    static let GiB: Int64 = 1 << 30

    @Test("a full document decodes to the right spec")
    func fullDocument() throws {
        let document = try json(
            """
            {
              "name": "swahili-asr-7b",
              "project": "kenya-health",
              "kind": "training",
              "command": ["python3", "train.py", "--epochs", "3"],
              "env": {"WANDB_MODE": "offline", "SEED": 42, "DEBUG": false},
              "resources": {"cpus": 8, "memory": "64Gi", "gpus": 2, "gpu_model": "H100", "gpu_memory": "80Gi"},
              "inputs": ["ke-health-corpus", "sw-wiki.2024"],
              "outputs": ["swahili-asr-7b.ckpt"],
              "max_runtime": "12h",
              "retries": 2,
              "priority": 50
            }
            """
        )
        let spec = try #require(JobSpec.validate(document).spec)
        let expected = JobSpec(
            name: "swahili-asr-7b",
            project: "kenya-health",
            kind: .training,
            command: ["python3", "train.py", "--epochs", "3"],
            env: ["WANDB_MODE": "offline", "SEED": "42", "DEBUG": "false"],
            resources: ResourceRequest(
                cpuMillis: 8000,
                memoryBytes: 64 * Self.GiB,
                gpus: 2,
                gpuModel: "H100",
                gpuMemoryBytes: 80 * Self.GiB
            ),
            inputs: ["ke-health-corpus", "sw-wiki.2024"],
            outputs: ["swahili-asr-7b.ckpt"],
            maxRuntimeSeconds: 43_200,
            retries: 2,
            priority: 50
        )
        #expect(spec == expected)
        #expect(spec.resources.cpuMillis == 8000)
        #expect(spec.resources.memoryBytes == 68_719_476_736)
        #expect(spec.resources.gpuMemoryBytes == 85_899_345_920)
        #expect(spec.maxRuntimeSeconds == 12 * 3600)
    }

    @Test("absent optional fields take their defaults")
    func defaults() throws {
        let spec = try #require(JobSpec.validate(.object(minimalJob)).spec)
        #expect(spec.name == "asr")
        #expect(spec.project == "swahili")
        #expect(spec.kind == .training)
        #expect(spec.command == ["python3", "train.py"])
        #expect(spec.env.isEmpty)
        #expect(spec.resources == ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30, gpus: 0))
        #expect(spec.resources.gpuModel == nil)
        #expect(spec.resources.gpuMemoryBytes == nil)
        #expect(spec.inputs.isEmpty)
        #expect(spec.outputs.isEmpty)
        #expect(spec.maxRuntimeSeconds == JobSpec.Limits.defaultMaxRuntimeSeconds)
        #expect(spec.maxRuntimeSeconds == 86_400)
        #expect(spec.retries == 0)
        #expect(spec.priority == 50)
    }

    @Test("null optional fields are the same as absent ones")
    func nullsAreDefaults() throws {
        let nulls: [String: JSONValue] = [
            "kind": .null, "env": .null, "resources": .null, "inputs": .null, "outputs": .null, "retries": .null,
            "priority": .null,
        ]
        let spec = try #require(JobSpec.validate(minimal(with: nulls)).spec)
        #expect(spec == JobSpec.validate(.object(minimalJob)).spec)
        let emptyResources = try #require(JobSpec.validate(resources([:])).spec)
        #expect(emptyResources.resources == ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30))
    }

    @Test(
        "a command given as a string runs through the shell",
        arguments: ["python3 train.py --epochs 3", "echo hi && sleep 1", "  x  "]
    )
    func commandString(line: String) throws {
        let spec = try #require(JobSpec.validate(minimal(with: ["command": .string(line)])).spec)
        #expect(spec.command == ["/bin/sh", "-c", line])
    }

    /// One field set to a good value, and how the spec of the minimal document changes with it.
    struct GoodField: Sendable, CustomTestStringConvertible {
        var field: String
        var value: JSONValue
        var change: @Sendable (inout JobSpec) -> Void

        init(_ field: String, _ value: JSONValue, _ change: @escaping @Sendable (inout JobSpec) -> Void) {
            self.field = field
            self.value = value
            self.change = change
        }

        var testDescription: String { "\(field): \(value)" }
    }

    static let goodFields: [GoodField] = [
        GoodField("kind", .string("inference")) {
            $0.kind = .inference
            $0.service = ServiceSpec()  // a service without a service: block gets the defaults
        },
        GoodField("kind", .string("training")) { $0.kind = .training },
        GoodField("max_runtime", .string("90s")) { $0.maxRuntimeSeconds = 90 },
        GoodField("max_runtime", .string("1h30m")) { $0.maxRuntimeSeconds = 5400 },
        GoodField("max_runtime", .string("30d")) { $0.maxRuntimeSeconds = 2_592_000 },
        GoodField("max_runtime", .number(3600)) { $0.maxRuntimeSeconds = 3600 },
        GoodField("max_runtime", .number(1)) { $0.maxRuntimeSeconds = 1 },
        GoodField("retries", .number(0)) { $0.retries = 0 },
        GoodField("retries", .number(20)) { $0.retries = 20 },
        GoodField("priority", .number(0)) { $0.priority = 0 },
        GoodField("priority", .number(1000)) { $0.priority = 1000 },
        GoodField("name", .string("a")) { $0.name = "a" },
        GoodField("name", .string("9lives_v1.2-rc")) { $0.name = "9lives_v1.2-rc" },
        GoodField("name", .string(String(repeating: "n", count: 128))) { $0.name = String(repeating: "n", count: 128) },
        GoodField("env", .object(["X": .number(1.5), "Y": .bool(true), "_Z": .string(""), "N": .number(-3)])) {
            $0.env = ["X": "1.5", "Y": "true", "_Z": "", "N": "-3"]
        },
        GoodField("env", .object([:])) { $0.env = [:] },
        GoodField("inputs", .array([])) { $0.inputs = [] },
        GoodField("inputs", .array([.string("b"), .string("a")])) { $0.inputs = ["b", "a"] },
        GoodField("outputs", .array([.string("model.ckpt")])) { $0.outputs = ["model.ckpt"] },
        GoodField("command", .array([.string("/bin/true")])) { $0.command = ["/bin/true"] },
        GoodField("command", .array([.string("echo"), .string("")])) { $0.command = ["echo", ""] },
        // YAML reads `[train.py, --epochs, 3]` with a number: a number or boolean word is its text.
        GoodField("command", .array([.string("train.py"), .string("--epochs"), .number(3), .number(0.5), .bool(true)]))
        {
            $0.command = ["train.py", "--epochs", "3", "0.5", "true"]
        },
        GoodField("command", .array([.number(1)])) { $0.command = ["1"] },
    ]

    @Test("good values of single fields", arguments: goodFields)
    func goodField(_ good: GoodField) throws {
        var expected = try #require(JobSpec.validate(.object(minimalJob)).spec)
        good.change(&expected)
        let result = JobSpec.validate(minimal(with: [good.field: good.value]))
        #expect(result.errors.isEmpty, "\(result.errors)")
        #expect(try #require(result.spec) == expected)
    }

    @Test(
        "good resources",
        arguments: [
            (["cpus": JSONValue.number(0.5)], ResourceRequest(cpuMillis: 500, memoryBytes: 1 << 30)),
            (["cpus": .string("2.5")], ResourceRequest(cpuMillis: 2500, memoryBytes: 1 << 30)),
            (["cpus": .number(4096)], ResourceRequest(cpuMillis: 4_096_000, memoryBytes: 1 << 30)),
            (["memory": .string("512Mi")], ResourceRequest(cpuMillis: 1000, memoryBytes: 512 << 20)),
            (["memory": .string("80G")], ResourceRequest(cpuMillis: 1000, memoryBytes: 80_000_000_000)),
            (["memory": .number(1_048_576)], ResourceRequest(cpuMillis: 1000, memoryBytes: 1_048_576)),
            (["gpus": .number(0)], ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30)),
            (["gpus": .number(64)], ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30, gpus: 64)),
            (
                ["gpus": .number(1), "gpu_model": .string("  a100 ")],
                ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30, gpus: 1, gpuModel: "a100")
            ),
            (
                ["gpus": .number(1), "gpu_memory": .string("40Gi")],
                ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30, gpus: 1, gpuMemoryBytes: 40 << 30)
            ),
        ] as [([String: JSONValue], ResourceRequest)]
    )
    func goodResources(fields: [String: JSONValue], expected: ResourceRequest) throws {
        let result = JobSpec.validate(resources(fields))
        #expect(result.errors.isEmpty, "\(result.errors)")
        #expect(try #require(result.spec).resources == expected)
    }

    /// Each bad document must fail with exactly one error, on exactly this field, whose message contains this text.
    static let badDocuments: [(String, JSONValue, String, String)] = [
        ("name missing", minimal(without: "name"), "name", "required"),
        ("name null", minimal(with: ["name": .null]), "name", "required"),
        ("name a number", minimal(with: ["name": .number(7)]), "name", "expected a string, got a number"),
        ("name empty", minimal(with: ["name": .string("")]), "name", "expected letters"),
        ("name starts with -", minimal(with: ["name": .string("-x")]), "name", "expected letters"),
        ("name 129 long", minimal(with: ["name": .string(String(repeating: "n", count: 129))]), "name", "at most 128"),
        ("project missing", minimal(without: "project"), "project", "required"),
        ("project with spaces", minimal(with: ["project": .string("kenya health")]), "project", "\"kenya health\""),
        ("project with slash", minimal(with: ["project": .string("a/b")]), "project", "expected letters"),
        ("kind batch", minimal(with: ["kind": .string("batch")]), "kind", "expected one of training, inference"),
        ("kind Training", minimal(with: ["kind": .string("Training")]), "kind", "\"Training\""),
        ("kind a list", minimal(with: ["kind": .array([])]), "kind", "expected a string, got a list"),
        ("command missing", minimal(without: "command"), "command", "required"),
        ("command []", minimal(with: ["command": .array([])]), "command", "at least one word"),
        (
            "command [{}]", minimal(with: ["command": .array([.object([:])])]), "command[0]",
            "expected a string, got a mapping"
        ),
        ("command [[]]", minimal(with: ["command": .array([.string("x"), .array([])])]), "command[1]", "got a list"),
        (
            "command second word null", minimal(with: ["command": .array([.string("echo"), .null])]), "command[1]",
            "got null"
        ),
        ("command empty string", minimal(with: ["command": .string("")]), "command", "non-empty"),
        ("command blank string", minimal(with: ["command": .string(" \t ")]), "command", "non-empty"),
        ("command a number", minimal(with: ["command": .number(3)]), "command", "got a number"),
        ("command a mapping", minimal(with: ["command": .object([:])]), "command", "got a mapping"),
        (
            "command too long",
            minimal(with: ["command": .array([.string("echo"), .string(String(repeating: "x", count: 64 * 1024))])]),
            "command", "at most 65536 bytes"
        ),
        ("env COMITY_X", minimal(with: ["env": .object(["COMITY_X": .string("1")])]), "env.COMITY_X", "reserved"),
        ("env key with -", minimal(with: ["env": .object(["MY-VAR": .string("1")])]), "env.MY-VAR", "variable name"),
        ("env key starts with digit", minimal(with: ["env": .object(["1X": .string("1")])]), "env.1X", "variable name"),
        ("env key empty", minimal(with: ["env": .object(["": .string("1")])]), "env.", "variable name"),
        ("env key with space", minimal(with: ["env": .object(["A B": .string("1")])]), "env.A B", "variable name"),
        ("env key non-ASCII", minimal(with: ["env": .object(["CAFÉ": .string("1")])]), "env.CAFÉ", "variable name"),
        ("env value a list", minimal(with: ["env": .object(["X": .array([])])]), "env.X", "got a list"),
        ("env value null", minimal(with: ["env": .object(["X": .null])]), "env.X", "got null"),
        ("env a list", minimal(with: ["env": .array([])]), "env", "mapping of variable names"),
        (
            "env too many",
            minimal(with: [
                "env": .object(Dictionary(uniqueKeysWithValues: (0..<257).map { ("V\($0)", JSONValue.string("")) }))
            ]),
            "env", "at most 256"
        ),
        ("inputs a string", minimal(with: ["inputs": .string("corpus")]), "inputs", "list of dataset names"),
        (
            "inputs bad name", minimal(with: ["inputs": .array([.string("ok"), .string("no way")])]), "inputs[1]",
            "\"no way\""
        ),
        ("inputs a number", minimal(with: ["inputs": .array([.number(1)])]), "inputs[0]", "got a number"),
        ("inputs twice", minimal(with: ["inputs": .array([.string("a"), .string("a")])]), "inputs[1]", "listed twice"),
        ("outputs bad name", minimal(with: ["outputs": .array([.string(".x")])]), "outputs[0]", "dataset name"),
        ("max_runtime forever", minimal(with: ["max_runtime": .string("forever")]), "max_runtime", "\"forever\""),
        ("max_runtime 31d", minimal(with: ["max_runtime": .string("31d")]), "max_runtime", "up to 30d"),
        ("max_runtime 0s", minimal(with: ["max_runtime": .string("0s")]), "max_runtime", "\"0s\""),
        ("max_runtime 0", minimal(with: ["max_runtime": .number(0)]), "max_runtime", "got a number"),
        ("max_runtime 1.5", minimal(with: ["max_runtime": .number(1.5)]), "max_runtime", "got a number"),
        ("max_runtime too long number", minimal(with: ["max_runtime": .number(2_592_001)]), "max_runtime", "up to 30d"),
        ("max_runtime a bool", minimal(with: ["max_runtime": .bool(true)]), "max_runtime", "got a boolean"),
        ("retries 99", minimal(with: ["retries": .number(99)]), "retries", "from 0 to 20"),
        ("retries -1", minimal(with: ["retries": .number(-1)]), "retries", "from 0 to 20"),
        ("retries 1.5", minimal(with: ["retries": .number(1.5)]), "retries", "whole number"),
        ("retries a string", minimal(with: ["retries": .string("2")]), "retries", "got a string"),
        ("retries 1e300", minimal(with: ["retries": .number(1e300)]), "retries", "whole number"),
        ("priority -1", minimal(with: ["priority": .number(-1)]), "priority", "from 0 to 1000"),
        ("priority 1001", minimal(with: ["priority": .number(1001)]), "priority", "from 0 to 1000"),
        ("resources a string", minimal(with: ["resources": .string("8")]), "resources", "expected a mapping"),
        ("resources.cpus 0", resources(["cpus": .number(0)]), "resources.cpus", "from 0.001 to 4096"),
        ("resources.cpus -1", resources(["cpus": .number(-1)]), "resources.cpus", "from 0.001 to 4096"),
        ("resources.cpus 4097", resources(["cpus": .number(4097)]), "resources.cpus", "got 4097"),
        ("resources.cpus eight", resources(["cpus": .string("eight")]), "resources.cpus", "\"eight\""),
        ("resources.cpus a bool", resources(["cpus": .bool(true)]), "resources.cpus", "got a boolean"),
        ("resources.memory lots", resources(["memory": .string("lots")]), "resources.memory", "\"lots\""),
        ("resources.memory 0", resources(["memory": .string("0")]), "resources.memory", "more than 0"),
        ("resources.memory -1Gi", resources(["memory": .string("-1Gi")]), "resources.memory", "\"-1Gi\""),
        ("resources.memory 1.5 bytes", resources(["memory": .number(1.5)]), "resources.memory", "got 1.5"),
        ("resources.memory a list", resources(["memory": .array([])]), "resources.memory", "got a list"),
        ("resources.gpus 1.5", resources(["gpus": .number(1.5)]), "resources.gpus", "whole number"),
        ("resources.gpus -1", resources(["gpus": .number(-1)]), "resources.gpus", "from 0 to 64"),
        ("resources.gpus 65", resources(["gpus": .number(65)]), "resources.gpus", "from 0 to 64"),
        ("resources.gpus a string", resources(["gpus": .string("2")]), "resources.gpus", "got a string"),
        ("gpu_model without gpus", resources(["gpu_model": .string("H100")]), "resources.gpus", "at least 1"),
        ("gpu_memory without gpus", resources(["gpu_memory": .string("80Gi")]), "resources.gpus", "at least 1"),
        (
            "gpu_model with gpus 0", resources(["gpus": .number(0), "gpu_model": .string("H100")]), "resources.gpus",
            "at least 1"
        ),
        (
            "gpu_model blank", resources(["gpus": .number(1), "gpu_model": .string("  ")]), "resources.gpu_model",
            "GPU model name"
        ),
        (
            "gpu_model too long",
            resources(["gpus": .number(1), "gpu_model": .string(String(repeating: "H", count: 65))]),
            "resources.gpu_model", "GPU model name"
        ),
        (
            "gpu_model a number", resources(["gpus": .number(1), "gpu_model": .number(100)]), "resources.gpu_model",
            "expected a string"
        ),
        (
            "gpu_memory lots", resources(["gpus": .number(1), "gpu_memory": .string("lots")]), "resources.gpu_memory",
            "\"lots\""
        ),
        (
            "unknown field comand", .object(minimalJob.merging(["comand": .string("x")]) { a, _ in a }), "comand",
            "did you mean \"command\"?"
        ),
        ("unknown field Priority", minimal(with: ["Priority": .number(1)]), "Priority", "did you mean \"priority\"?"),
        ("unknown field input", minimal(with: ["input": .array([])]), "input", "did you mean \"inputs\"?"),
        (
            "unknown field far off", minimal(with: ["zzzzzz": .null]), "zzzzzz",
            "unknown field; expected one of name, project"
        ),
        ("unknown resources field gpu", resources(["gpu": .number(1)]), "resources.gpu", "did you mean \"gpus\"?"),
        ("unknown resources field mem", resources(["mem": .string("1Gi")]), "resources.mem", "unknown field"),
        (
            "unknown resources field memroy", resources(["memroy": .string("1Gi")]), "resources.memroy",
            "did you mean \"memory\"?"
        ),
        ("document a list", .array([]), "(document)", "expected a mapping of job fields, got a list"),
        ("document a string", .string("name: x"), "(document)", "got a string"),
        ("document null", .null, "(document)", "got null"),
        ("document a number", .number(1), "(document)", "got a number"),
    ]

    @Test("bad input is reported on the exact field", arguments: badDocuments)
    func badField(label: String, document: JSONValue, field: String, message: String) throws {
        let result = JobSpec.validate(document)
        #expect(result.spec == nil, "\(label) was accepted")
        let error = try #require(result.errors.first, "\(label) gave no error")
        #expect(result.errors.count == 1, "\(label): \(result.errors)")
        #expect(error.field == field, "\(label)")
        #expect(error.message.contains(message), "\(label): \(error.message)")
        #expect(error.description == "\(error.field): \(error.message)")
    }

    @Test("all problems of a document are reported at once")
    func manyErrors() throws {
        let document = try json(
            """
            {
              "project": "kenya health",
              "kind": "batch",
              "comand": ["python3"],
              "env": {"COMITY_X": "1", "bad-key": "2", "GOOD": "3"},
              "resources": {"cpus": 0, "memory": "lots", "gpus": 1.5, "gpu_model": "H100", "vram": "80Gi"},
              "inputs": ["ok", "not ok"],
              "max_runtime": "forever",
              "retries": 99,
              "priority": -1
            }
            """
        )
        let result = JobSpec.validate(document)
        #expect(result.spec == nil)
        let fields = result.errors.map(\.field)
        let expected = [
            "comand", "name", "project", "kind", "command", "env.COMITY_X", "env.bad-key", "inputs[1]", "max_runtime",
            "retries", "priority", "resources.vram", "resources.cpus", "resources.memory", "resources.gpus",
        ]
        #expect(Set(fields) == Set(expected))
        // resources.gpus appears twice: 1.5 is not a whole number, and gpu_model needs at least 1 GPU.
        #expect(fields.count == expected.count + 1, "\(fields)")
        #expect(fields.filter { $0 == "resources.gpus" }.count == 2)
        let comand = try #require(result.errors.first { $0.field == "comand" })
        #expect(comand.message.contains("did you mean \"command\"?"))
        // The same document gives the same errors in the same order.
        #expect(JobSpec.validate(document).errors == result.errors)
        if case .failure(let failure) = result {
            #expect(failure.description == failure.errors.map(\.description).joined(separator: "; "))
        }
    }

    @Test("unknown fields are reported first, sorted, whatever the order of the mapping")
    func errorOrder() {
        let document = minimal(with: [
            "zeta": .null, "alpha": .null, "priority": .number(-1), "retries": .number(-1), "kind": .string("x"),
            "mid": .null,
        ])
        let fields = JobSpec.validate(document).errors.map(\.field)
        #expect(Array(fields.prefix(3)) == ["alpha", "mid", "zeta"])
        #expect(Set(fields.dropFirst(3)) == ["kind", "retries", "priority"])
    }

    @Test("the spec encodes and decodes through Codable")
    func specCodable() throws {
        let spec = try #require(JobSpec.validate(resources(["gpus": .number(1), "gpu_model": .string("L4")])).spec)
        let data = try JSONEncoder().encode(spec)
        #expect(try JSONDecoder().decode(JobSpec.self, from: data) == spec)
    }

    // MARK: regressions (found by these tests, fixed in the core)

    @Test("a huge number for a size or duration is an error, not a crash")
    func hugeNumbers() {
        let base: [String: JSONValue] = ["name": .string("a"), "project": .string("b"), "command": .string("x")]
        var memory = base
        memory["resources"] = .object(["memory": .number(1e30)])
        #expect(JobSpec.validate(.object(memory)).errors.map(\.field) == ["resources.memory"])
        var runtime = base
        runtime["max_runtime"] = .number(1e30)
        #expect(JobSpec.validate(.object(runtime)).errors.map(\.field) == ["max_runtime"])
        var days = base
        days["max_runtime"] = .string("999999999999999d")
        #expect(JobSpec.validate(.object(days)).errors.map(\.field) == ["max_runtime"])
    }

    @Test("a command string longer than the limit is rejected like a command list")
    func longCommandString() {
        let line = String(repeating: "x", count: JobSpec.Limits.maxCommandBytes + 1)
        let result = JobSpec.validate(minimal(with: ["command": .string(line)]))
        #expect(result.errors.map(\.field) == ["command"])
    }

    @Test("a tiny positive CPU count is an error, not zero millicores")
    func tinyCPUs() {
        let result = JobSpec.validate(resources(["cpus": .number(0.0004)]))
        #expect(result.errors.map(\.field) == ["resources.cpus"])
        #expect(JobSpec.validate(resources(["cpus": .number(0.001)])).spec?.resources.cpuMillis == 1)
    }
}
