import ComityAPI
import ComityCore
import Foundation
import PostgresNIO
import Testing

@testable import ComityStore

@Suite("GPU usage and MIG devices in the store", .enabled(if: TestDatabase.isAvailable, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct AttemptUsageStoreTests {
    /// An A100 in MIG mode as the agent reports it: three MIG devices, numbered 0–2, each its own GPU.
    static let migDevices = [("3g.40gb", "MIG-3a"), ("3g.40gb", "MIG-3b"), ("1g.10gb", "MIG-1c")].enumerated().map {
        index, device in
        GPU(
            index: index,
            uuid: device.1,
            model: "NVIDIA A100-SXM4-80GB MIG \(device.0)",
            memoryBytes: device.0 == "1g.10gb" ? 10_000_000_000 : 40_000_000_000,
            mig: device.0,
            parentUuid: "GPU-a100",
            migMode: true
        )
    }

    @Test("a finish report's usage is stored with the attempt and shown on the job; MIG devices are assigned apart")
    func usageRoundTrip() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let host = try await seed.enroll("mig", cpus: 16, gpus: Self.migDevices)
            let forty = ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30, gpus: 1, gpuModel: "MIG 3g.40gb")
            let jobs = try await seed.store.submit(
                [
                    JobSpec(name: "a", project: "llm", command: ["true"], resources: forty),
                    JobSpec(name: "b", project: "llm", command: ["true"], resources: forty),
                    JobSpec(name: "c", project: "llm", command: ["true"], resources: forty),
                ],
                by: seed.admin
            )
            _ = try await seed.store.schedulingPass()
            // Two 3g.40gb devices: two jobs run, each on its own; the third waits.
            let assignments = try await seed.store.assignments(host: host.host)
            #expect(assignments.count == 2)
            #expect(Set(assignments.flatMap(\.gpuUuids)) == ["MIG-3a", "MIG-3b"])
            #expect(try await seed.state(jobs[2]).state == .queued)

            let assignment = try #require(assignments.first)
            #expect(try await seed.store.start(attempt: assignment.attempt, host: host.host).current)
            #expect(try await seed.state(assignment.jobId).usage == nil)
            let usage = AttemptUsage(
                gpus: [
                    GPUUsage(
                        uuid: assignment.gpuUuids[0],
                        samples: 12,
                        maxMemoryBytes: 1800 << 20,
                        maxDeviceMemoryBytes: nil,
                        meanUtilizationPercent: nil,
                        maxUtilizationPercent: nil
                    )
                ],
                sampleIntervalSeconds: 5
            )
            _ = try await seed.store.finish(
                attempt: assignment.attempt,
                host: host.host,
                FinishRequest(outcome: .exited, exitCode: 0, usage: usage)
            )
            let view = try await seed.state(assignment.jobId)
            #expect(view.state == .succeeded)
            #expect(view.usage == usage)
            let stored = try await client.query(
                "select usage->'gpus'->0->>'max_memory_bytes' from attempts where id = \(assignment.attempt)",
                logger: TestDatabase.logger
            ).decode(String?.self).collect()
            #expect(stored == [String(1800 << 20)])
        }
    }

    @Test("a malformed usage record is refused, naming its field, and nothing is written")
    func badUsage() async throws {
        try await TestDatabase.withDatabase { client, _ in
            let seed = try await TestDatabase.seeded(client)
            let host = try await seed.enroll("h", gpus: [GPU(index: 0, uuid: "GPU-x", model: "NVIDIA H100 80GB HBM3", memoryBytes: 80 << 30)])
            let job = try await seed.submit("j", gpus: 1)
            _ = try await seed.store.schedulingPass()
            let attempt = try #require(try await seed.state(job).attempt)
            #expect(try await seed.store.start(attempt: attempt, host: host.host).current)
            let bad = AttemptUsage(
                gpus: [GPUUsage(uuid: "GPU-x", samples: 3, maxMemoryBytes: 1, meanUtilizationPercent: 140, maxUtilizationPercent: 100)],
                sampleIntervalSeconds: 5
            )
            await #expect {
                try await seed.store.finish(attempt: attempt, host: host.host, FinishRequest(outcome: .exited, exitCode: 0, usage: bad))
            } throws: { error in
                (error as? StoreError)?.field == "usage.gpus[0].mean_utilization_percent"
            }
            #expect(try await seed.state(job).state == .running)
        }
    }
}
