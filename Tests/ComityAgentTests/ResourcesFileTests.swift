import ComityAgent
import ComityCore
import Testing

@Suite("Resources file")
struct ResourcesFileTests {
    @Test("a full file")
    func full() throws {
        let resources = try ResourcesFile.parse(
            """
            cpus: 64
            memory: 512Gi
            gpus:
              - {model: H100, memory: 80Gi, uuid: GPU-1}
              - {model: NVIDIA H100 80GB HBM3, memory: 81559Mi, uuid: GPU-2}
            """
        )
        #expect(resources.cpuMillis == 64_000)
        #expect(resources.memoryBytes == 512 << 30)
        #expect(
            resources.gpus == [
                GPU(index: 0, uuid: "GPU-1", model: "H100", memoryBytes: 80 << 30),
                GPU(index: 1, uuid: "GPU-2", model: "NVIDIA H100 80GB HBM3", memoryBytes: 81_559 << 20),
            ]
        )
    }

    @Test("flow style, no GPUs, explicit index, JSON")
    func variants() throws {
        #expect(
            try ResourcesFile.parse("{cpus: 0.5, memory: 1Gi}") == HostResources(cpuMillis: 500, memoryBytes: 1 << 30)
        )
        let indexed = try ResourcesFile.parse("{cpus: 8, memory: 64Gi, gpus: [{model: L4, memory: 24Gi, index: 3}]}")
        #expect(indexed.gpus == [GPU(index: 3, uuid: "", model: "L4", memoryBytes: 24 << 30)])
        let json = try ResourcesFile.parse(#"{"cpus": 4, "memory": "16Gi", "gpus": []}"#)
        #expect(json == HostResources(cpuMillis: 4000, memoryBytes: 16 << 30))
    }

    @Test(
        "bad input names the field",
        arguments: [
            ("{cpus: 64}", "memory", "required"),
            ("{memory: 1Gi}", "cpus", "required"),
            ("{cpus: -1, memory: 1Gi}", "cpus", "greater than 0"),
            ("{cpus: many, memory: 1Gi}", "cpus", "\"many\""),
            ("{cpus: 8, memory: lots}", "memory", "\"lots\""),
            ("{cpus: 8, memory: 1Gi, gpus: 2}", "gpus", "list of GPUs"),
            (
                "{cpus: 8, memory: 1Gi, gpus: [{model: H100, memory: 80Gi}, {model: H100, memory: big}]}",
                "gpus[1].memory", "\"big\""
            ),
            ("{cpus: 8, memory: 1Gi, gpus: [{memory: 80Gi}]}", "gpus[0].model", "required"),
            ("{cpus: 8, memory: 1Gi, gpus: [{model: H100, memory: 80Gi, uuid: 'GPU 1'}]}", "gpus[0].uuid", "no spaces"),
            ("{cpus: 8, memory: 1Gi, gpus: [{model: H100, memory: 80Gi, index: -2}]}", "gpus[0].index", "whole number"),
            (
                "{cpus: 8, memory: 1Gi, gpus: [{model: H100, memory: 8G, uuid: A}, {model: L4, memory: 8G, uuid: A}]}",
                "gpus[1].uuid", "earlier GPU"
            ),
            (
                "{cpus: 8, memory: 1Gi, gpus: [{model: H100, memory: 80Gi, index: 1}, {model: H100, memory: 80Gi}]}",
                "gpus[1].index", "earlier GPU"
            ),
            ("{cpus: 8, memroy: 1Gi}", "memroy", "did you mean \"memory\"?"),
            (
                "{cpus: 8, memory: 1Gi, gpus: [{model: H100, memory: 80Gi, uid: x}]}", "gpus[0].uid",
                "did you mean \"uuid\"?"
            ),
            ("- cpus: 8", "(document)", "expected a mapping"),
            ("cpus: [8", "(document)", "not valid YAML"),
        ]
    )
    func badInput(text: String, field: String, fragment: String) {
        #expect {
            try ResourcesFile.parse(text)
        } throws: { error in
            guard let failure = error as? ValidationFailure else { return false }
            return failure.errors.contains { $0.field == field && $0.message.contains(fragment) }
        }
    }

    @Test("every problem is reported at once")
    func allProblems() {
        #expect {
            try ResourcesFile.parse("{cpus: 0, memory: x, gpus: [{model: '', memory: 1Gi}]}")
        } throws: { error in
            let fields = Set((error as? ValidationFailure)?.errors.map(\.field) ?? [])
            return fields == ["cpus", "memory", "gpus[0].model"]
        }
    }

    @Test("a missing file")
    func missingFile() {
        #expect(throws: ValidationFailure.self) { try ResourcesFile.load(path: "/nonexistent/resources.yaml") }
    }
}
