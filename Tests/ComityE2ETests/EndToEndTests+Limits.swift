import ComityAPI
import ComityCore
import Foundation
import Testing

extension EndToEndTests {
    @Test("a job that outgrows its memory limit ends OOM_KILLED, without a retry, and the CLI says so")
    func outOfMemory() async throws {
        let listed = try await pool.cliOK(["hosts", "--output", "json"])
        let hosts = try WireJSON.decoder().decode([HostView].self, from: Data(listed.stdout.utf8))
        let runtime = try #require(hosts.first { $0.name == "cpu-a" }?.resources.runtime)
        guard let cgroups = runtime.cgroups else {
            // Skipped, not failed: the agents found no cgroups to limit jobs with, and said so.
            let table = try await pool.cliOK(["hosts"]).stdout
            #expect(table.contains("process (no limits)"), "\(table)")
            try Test.cancel(Comment(rawValue: "no usable cgroups here: \(runtime.notes.joined(separator: "; "))"))
        }
        let table = try await pool.cliOK(["hosts"]).stdout
        #expect(table.contains("process/cg-\(cgroups)"), "\(table)")
        let python = "/usr/bin/python3"
        guard FileManager.default.isExecutableFile(atPath: python) else { try Test.cancel("needs \(python)") }

        let file = try pool.jobFile("hungry", """
            name: hungry
            project: llm
            command: ["\(python)", "-c", "b = b'x' * (256 << 20); print('survived', len(b))"]
            resources: {cpus: 1, memory: 64Mi}
            retries: 2
            """)
        let id = try await pool.submit(file)
        let job = try await pool.waitFor(id, [.succeeded, .failed, .cancelled], timeout: .seconds(60))
        #expect(job.state == .failed)
        #expect(job.reason == "OOM_KILLED: memory limit 64Mi exceeded")
        #expect(job.attempts == 1, "an OOM kill is not retried: the same limit would end the same way")

        let shown = try await pool.cliOK(["job", String(id)]).stdout
        #expect(shown.contains("failed (OOM_KILLED)"), "\(shown)")
        #expect(shown.contains("OOM_KILLED: memory limit 64Mi exceeded"), "\(shown)")
        let list = try await pool.cliOK(["jobs", "--limit", "10000"]).stdout
        let row = list.split(separator: "\n").first { $0.hasPrefix("\(id) ") }
        #expect(row?.contains("failed (OOM_KILLED)") == true, "\(list)")

        // The same program within its limit succeeds.
        let fits = try pool.jobFile("fits", """
            name: fits
            project: llm
            command: ["\(python)", "-c", "b = b'x' * (16 << 20); print('survived', len(b))"]
            resources: {cpus: 1, memory: 256Mi}
            """)
        let fitting = try await pool.waitFor(try await pool.submit(fits), [.succeeded, .failed, .cancelled])
        #expect(fitting.state == .succeeded, "\(fitting.reason ?? "")")
    }
}
