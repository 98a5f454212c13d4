import ComityAgent
import ComityCore
import Foundation
import Testing

/// `Tests/Fixtures`: real captures (copied from the project's shared fixtures, unchanged), found from this file.
let fixturesDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()
    .appendingPathComponent("../Fixtures")
    .standardizedFileURL
let h100FixtureDirectory = fixturesDirectory.appendingPathComponent("gpu/h100-80gb")
let hasH100Fixture = FileManager.default.fileExists(
    atPath: h100FixtureDirectory.appendingPathComponent("query-gpu.csv").path
)

@Suite("Inventory")
struct InventoryTests {
    @Test(
        "nvidia-smi output of a real H100 host",
        .enabled(
            if: hasH100Fixture,
            "GPU fixtures not found at Tests/Fixtures/gpu/h100-80gb"
        )
    )
    func h100Query() throws {
        // The fixture's query asks for more columns than the agent does; the first four are the agent's.
        let text = try String(contentsOf: h100FixtureDirectory.appendingPathComponent("query-gpu.csv"), encoding: .utf8)
        let gpus = try NvidiaSMI.parseGPUs(text)
        #expect(
            gpus == [
                GPU(
                    index: 0,
                    uuid: "GPU-fb4909a4-73bc-673c-cd43-de36d4ffd1c9",
                    model: "NVIDIA H100 80GB HBM3",
                    memoryBytes: 81_559 << 20
                )
            ]
        )
        // "80GB" is decimal: 81559 MiB is less than 80 GiB. A job must ask for `gpu_memory: 80G` (or less) to fit.
        #expect(
            ResourceRequest(cpuMillis: 1000, memoryBytes: 1, gpus: 1, gpuModel: "H100", gpuMemoryBytes: 80_000_000_000)
                .accepts(gpus[0])
        )
        #expect(
            !ResourceRequest(cpuMillis: 1000, memoryBytes: 1, gpus: 1, gpuModel: "H100", gpuMemoryBytes: 80 << 30)
                .accepts(gpus[0])
        )
    }

    @Test(
        "nvidia-smi output with header and units",
        .enabled(
            if: hasH100Fixture,
            "GPU fixtures not found at Tests/Fixtures/gpu/h100-80gb"
        )
    )
    func h100FixtureWithHeader() throws {
        let text = try String(
            contentsOf: h100FixtureDirectory.appendingPathComponent("query-gpu-header.csv"),
            encoding: .utf8
        )
        let gpus = try NvidiaSMI.parseGPUs(text)
        #expect(gpus.map(\.uuid) == ["GPU-fb4909a4-73bc-673c-cd43-de36d4ffd1c9"])
        #expect(gpus.map(\.memoryBytes) == [81_559 << 20])
    }

    @Test("nvidia-smi output of an 8-GPU host")
    func eightGPUs() throws {
        var text = ""
        for index in 0..<8 {
            text += "\(index), GPU-0000000\(index)-aaaa-bbbb-cccc-dddddddddddd, NVIDIA A100-SXM4-40GB, 40960\r\n"
        }
        text += "\n"
        let gpus = try NvidiaSMI.parseGPUs(text)
        #expect(gpus.count == 8)
        #expect(gpus.map(\.index) == Array(0..<8))
        #expect(gpus[7].uuid == "GPU-00000007-aaaa-bbbb-cccc-dddddddddddd")
        #expect(gpus.allSatisfy { $0.model == "NVIDIA A100-SXM4-40GB" && $0.memoryBytes == 40 << 30 })
    }

    @Test("no GPUs: empty output")
    func emptyOutput() throws {
        #expect(try NvidiaSMI.parseGPUs("").isEmpty)
        #expect(try NvidiaSMI.parseGPUs("\n").isEmpty)
    }

    @Test(
        "bad nvidia-smi lines are named",
        arguments: [
            ("0, GPU-1, NVIDIA H100, [N/A]\n", 1, "memory.total"),
            ("0, GPU-1, NVIDIA H100, 81559\n1, GPU-2\n", 2, "expected index, uuid, name, memory.total"),
            ("x, GPU-1, NVIDIA H100, 81559\n", 1, "GPU index"),
            ("0, GPU-1, NVIDIA H100, 81559\n0, GPU-2, NVIDIA H100, 81559\n", 2, "twice"),
        ]
    )
    func badOutput(text: String, line: Int, fragment: String) {
        #expect {
            try NvidiaSMI.parseGPUs(text)
        } throws: { error in
            guard let error = error as? NvidiaSMI.ParseError else { return false }
            return error.line == line && error.message.contains(fragment)
        }
    }

    @Test("MemTotal from /proc/meminfo")
    func memTotal() {
        let meminfo = "MemTotal:       131891368 kB\nMemFree:        1000 kB\nMemAvailable:   2000 kB\n"
        #expect(Inventory.parseMemTotal(meminfo) == Int64(131_891_368) * 1024)
        #expect(Inventory.parseMemTotal("MemFree: 1 kB\n") == nil)
    }

    @Test("CPUs from the affinity mask")
    func cpusAllowed() {
        #expect(Inventory.parseCpusAllowed("Name:\tx\nCpus_allowed:\tffff\nCpus_allowed_list:\t0-15\n") == 16)
        #expect(Inventory.parseCpusAllowed("Cpus_allowed:\t00000000,00000005\n") == 2)
        #expect(Inventory.parseCpusAllowed("Name:\tx\n") == nil)
        #expect(Inventory.cpuCount() >= 1)
    }

    @Test("/proc stat lines with awkward command names")
    func procStat() {
        let entry = ProcessTable.parseStat("4242 (my (odd) name) S 1 4240 4240 0 -1 4194560 0 0")
        #expect(entry == ProcessTable.Entry(pid: 4242, state: "S", parent: 1, group: 4240))
        #expect(ProcessTable.parseStat("garbage") == nil)
    }
}
