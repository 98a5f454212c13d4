import ComityAgent
import ComityCore
import Foundation
import Testing

@Suite("GPU inventory: MIG and multi-GPU hosts")
struct GPUInventoryTests {
    @Test(
        "the real H100 capture: -L lists the one GPU, MIG disabled in the wide query",
        .enabled(
            if: hasH100Fixture,
            "GPU fixtures not found at Tests/Fixtures/gpu/h100-80gb"
        )
    )
    func h100Listing() throws {
        let list = try NvidiaSMI.parseList(
            String(contentsOf: h100FixtureDirectory.appendingPathComponent("nvidia-smi-L.txt"), encoding: .utf8)
        )
        #expect(
            list == [
                NvidiaSMI.ListedGPU(
                    index: 0,
                    name: "NVIDIA H100 80GB HBM3",
                    uuid: "GPU-fb4909a4-73bc-673c-cd43-de36d4ffd1c9"
                )
            ]
        )
        // The agent's own query, cut from the capture's wider one (its 10th column is mig.mode.current).
        let wide = try String(contentsOf: h100FixtureDirectory.appendingPathComponent("query-gpu.csv"), encoding: .utf8)
        let columns = wide.split(separator: ",").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(columns[9] == "Disabled")
        let own = (columns[0..<4] + [columns[9]]).joined(separator: ", ") + "\n"
        let physical = try NvidiaSMI.parseGPUs(own)
        #expect(physical.map(\.migMode) == [false])
        let devices = NvidiaSMI.devices(physical: physical, listing: list)
        #expect(devices.schedulable == physical)
        #expect(devices.warnings.isEmpty)
    }

    @Test("8 × H100: eight whole GPUs, indices 0–7, MIG off")
    func eightH100() throws {
        let physical = try NvidiaSMI.parseGPUs(SyntheticGPUs.eightH100)
        let devices = NvidiaSMI.devices(physical: physical, listing: [])
        #expect(devices.schedulable.map(\.index) == Array(0..<8))
        #expect(Set(devices.schedulable.map(\.uuid)).count == 8)
        #expect(devices.schedulable.allSatisfy { $0.migMode == false && $0.mig == nil })
        #expect(devices.schedulable.allSatisfy { $0.memoryBytes == 81_559 << 20 })
    }

    @Test("a mixed host: the A100's MIG devices replace it; the H100 and the V100 stay whole")
    func mixedHost() throws {
        let physical = try NvidiaSMI.parseGPUs(SyntheticGPUs.mixedQuery)
        #expect(physical.map(\.migMode) == [true, false, nil])
        let listing = try NvidiaSMI.parseList(SyntheticGPUs.mixedList)
        #expect(listing.map(\.migDevices.count) == [3, 0, 0])
        let devices = NvidiaSMI.devices(physical: physical, listing: listing)
        #expect(devices.warnings.isEmpty)
        let a100 = "GPU-a1000000-0000-4000-8000-000000000000"
        #expect(
            devices.schedulable == [
                GPU(
                    index: 0,
                    uuid: "MIG-3a000000-0000-5000-8000-000000000000",
                    model: "NVIDIA A100-SXM4-80GB MIG 3g.40gb",
                    memoryBytes: 40_000_000_000,
                    mig: "3g.40gb",
                    parentUuid: a100,
                    migMode: true
                ),
                GPU(
                    index: 1,
                    uuid: "MIG-3b000000-0000-5000-8000-000000000001",
                    model: "NVIDIA A100-SXM4-80GB MIG 3g.40gb",
                    memoryBytes: 40_000_000_000,
                    mig: "3g.40gb",
                    parentUuid: a100,
                    migMode: true
                ),
                GPU(
                    index: 2,
                    uuid: "MIG-1c000000-0000-5000-8000-000000000002",
                    model: "NVIDIA A100-SXM4-80GB MIG 1g.10gb",
                    memoryBytes: 10_000_000_000,
                    mig: "1g.10gb",
                    parentUuid: a100,
                    migMode: true
                ),
                GPU(
                    index: 3,
                    uuid: "GPU-b1000000-0000-4000-8000-000000000001",
                    model: "NVIDIA H100 80GB HBM3",
                    memoryBytes: 81_559 << 20,
                    migMode: false
                ),
                GPU(
                    index: 4,
                    uuid: "GPU-c1000000-0000-4000-8000-000000000002",
                    model: "Tesla V100-SXM2-16GB",
                    memoryBytes: 16_160 << 20
                ),
            ]
        )
        // A job can target a profile, or a size a MIG device meets.
        let profile = ResourceRequest(cpuMillis: 1000, memoryBytes: 1, gpus: 1, gpuModel: "MIG 1g.10gb")
        #expect(devices.schedulable.filter(profile.accepts).map(\.index) == [2])
        let forty = ResourceRequest(
            cpuMillis: 1000,
            memoryBytes: 1,
            gpus: 1,
            gpuModel: "A100",
            gpuMemoryBytes: 40_000_000_000
        )
        #expect(devices.schedulable.filter(forty.accepts).map(\.index) == [0, 1])
    }

    @Test("a GPU in MIG mode without MIG devices is not offered, with a warning")
    func migWithoutDevices() throws {
        let physical = try NvidiaSMI.parseGPUs(
            "0, GPU-a, NVIDIA A100-SXM4-40GB, [N/A], Enabled\n1, GPU-b, NVIDIA A100-SXM4-40GB, 40960, Disabled\n"
        )
        #expect(physical.map(\.memoryBytes) == [0, 40_960 << 20])
        let devices = NvidiaSMI.devices(
            physical: physical,
            listing: try NvidiaSMI.parseList(
                "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-a)\nGPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-b)\n"
            )
        )
        #expect(devices.schedulable.map(\.uuid) == ["GPU-b"])
        #expect(devices.schedulable.map(\.index) == [0])
        #expect(devices.warnings.count == 1 && devices.warnings[0].contains("GPU-a"))
    }

    @Test(
        "MIG profile sizes",
        arguments: [
            ("3g.40gb", Int64(40_000_000_000)), ("1g.10gb", 10_000_000_000), ("7g.80gb", 80_000_000_000),
            ("1g.5gb", 5_000_000_000), ("1c.3g.40gb", 40_000_000_000), ("1g.10gb+me", 10_000_000_000),
        ]
    )
    func profileSizes(profile: String, bytes: Int64) {
        #expect(NvidiaSMI.migMemoryBytes(profile: profile) == bytes)
    }

    @Test("profiles without a size, and bad -L lines")
    func badListing() throws {
        #expect(NvidiaSMI.migMemoryBytes(profile: "3g") == nil)
        #expect(NvidiaSMI.migMemoryBytes(profile: "") == nil)
        for (text, line) in [
            ("GPU 0: NVIDIA A100\n", 1),
            ("  MIG 1g.10gb Device 0: (UUID: MIG-x)\n", 1),
            ("GPU 0: A (UUID: GPU-a)\n  MIG 1g.10gb Thing 0: (UUID: MIG-x)\n", 2),
            ("GPU x: A (UUID: GPU-a)\n", 1),
        ] {
            #expect(throws: NvidiaSMI.ParseError.self) { try NvidiaSMI.parseList(text) }
            do {
                _ = try NvidiaSMI.parseList(text)
            } catch {
                #expect(error.line == line, "\(text)")
            }
        }
        // Lines a newer driver might add are skipped.
        #expect(try NvidiaSMI.parseList("\nSomething else\nGPU 0: A (UUID: GPU-a)\n").map(\.uuid) == ["GPU-a"])
        // Older drivers name MIG devices MIG-GPU-<uuid>/gi/ci.
        #expect(
            try NvidiaSMI.parseList("GPU 0: A (UUID: GPU-a)\n  MIG 3g.20gb Device 0: (UUID: MIG-GPU-a/1/0)\n")
                .first?.migDevices == [NvidiaSMI.MIGDevice(profile: "3g.20gb", device: 0, uuid: "MIG-GPU-a/1/0")]
        )
    }

    @Test("a UUID listed twice is refused")
    func duplicateUUID() {
        #expect(throws: NvidiaSMI.ParseError.self) {
            try NvidiaSMI.parseGPUs("0, GPU-a, A, 100, Disabled\n1, GPU-a, A, 100, Disabled\n")
        }
    }

    @Test("detection runs nvidia-smi's queries: -L only when a GPU is in MIG mode")
    func detectionThroughFake() async throws {
        let fake = try FakeNvidiaSMI(answers: ["query": SyntheticGPUs.mixedQuery, "list": SyntheticGPUs.mixedList])
        defer { fake.remove() }
        let mixed = try await Inventory.detectGPUDevices(nvidiaSMI: fake.executable, logger: quietLogger)
        #expect(mixed.schedulable.map(\.uuid).filter { $0.hasPrefix("MIG-") }.count == 3)
        #expect(mixed.schedulable.count == 5)
        #expect(fake.calls.map { $0.hasPrefix("-L") } == [false, true])

        try fake.set("query", SyntheticGPUs.eightH100)
        let eight = try await Inventory.detectGPUDevices(nvidiaSMI: fake.executable, logger: quietLogger)
        #expect(eight.schedulable.count == 8)
        #expect(fake.calls.count == 3, "no -L call without MIG: \(fake.calls)")
    }

    @Test("a driver that does not know mig.mode.current gets the older query")
    func legacyDriver() async throws {
        let fake = try FakeNvidiaSMI(answers: [
            "query.fail": "Field \"mig.mode.current\" is not a valid field to query.",
            "legacy-query": "0, GPU-old, Tesla P100-PCIE-16GB, 16280\n",
        ])
        defer { fake.remove() }
        let devices = try await Inventory.detectGPUDevices(nvidiaSMI: fake.executable, logger: quietLogger)
        #expect(
            devices.schedulable == [
                GPU(index: 0, uuid: "GPU-old", model: "Tesla P100-PCIE-16GB", memoryBytes: 16_280 << 20)
            ]
        )
    }

    @Test("a failing nvidia-smi is an error naming it")
    func failingTool() async throws {
        let fake = try FakeNvidiaSMI(answers: [
            "query.fail": "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
            "legacy-query.fail": "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
        ])
        defer { fake.remove() }
        await #expect {
            try await Inventory.detectGPUDevices(nvidiaSMI: fake.executable, logger: quietLogger)
        } throws: { error in
            "\(error)".contains("couldn't communicate with the NVIDIA driver")
        }
    }
}
