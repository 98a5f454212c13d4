import ComityAPI
import ComityClient
import ComityCore
import Foundation
import Testing

@testable import ComityAgent
/// A stand-in for the server's agent routes (python3): hands out `assignments.json` once, acknowledges starts, logs
/// and finishes, and appends every heartbeat it gets, with its arrival time, to `heartbeats.jsonl`.
private let fakeServer = """
    import http.server, json, sys, threading, time
    root = sys.argv[1]
    lock = threading.Lock()
    handed_out = []
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def reply(self, value):
            body = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_GET(self):
            with lock:
                first = not handed_out
                handed_out.append(True)
            if first:
                self.reply(json.load(open(root + "/assignments.json")))
            else:
                time.sleep(0.5)
                self.reply({"assignments": []})
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else b"{}"
            if self.path == "/v1/agent/heartbeat":
                with lock, open(root + "/heartbeats.jsonl", "a") as file:
                    file.write(json.dumps({"at": time.time(), "request": json.loads(data)}) + "\\n")
                self.reply({"stop": [], "lease_seconds": 60})
            elif self.path == "/v1/agent/reports":
                report = json.loads(data)
                self.reply({
                    "starts": [{"attempt": a, "current": True, "state": "running"} for a in report["starts"]],
                    "ends": [{"attempt": e["attempt"], "current": False, "state": "succeeded"} for e in report["ends"]],
                })
            else:
                self.reply({"current": True, "state": "running"})
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(root + "/port.tmp", "w") as file:
        file.write(str(server.server_address[1]))
    import os
    os.rename(root + "/port.tmp", root + "/port")
    server.serve_forever()
    """

/// One heartbeat as the fake server recorded it.
private struct Recorded: Decodable {
    var at: Double
    var request: HeartbeatRequest
}

@Suite("Service heartbeats", .timeLimit(.minutes(1)))
struct ServiceHeartbeatTests {
    @Test("an agent reports its service replica in heartbeats, at once when it turns healthy")
    func reportsPromptly() async throws {
        let root = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let encoder = WireJSON.encoder()
        let spec = JobSpec(
            name: "web",
            project: "p",
            kind: .inference,
            command: httpService,
            resources: ResourceRequest(cpuMillis: 100, memoryBytes: 64 << 20),
            service: ServiceSpec(healthPath: "/healthz", healthIntervalSeconds: 1)
        )
        let assignment = Assignment(
            attempt: 77,
            jobId: 5,
            spec: spec,
            gpuIndices: [],
            gpuUuids: [],
            leaseExpiresAt: Date().addingTimeInterval(60)
        )
        try encoder.encode(AssignmentList(assignments: [assignment]))
            .write(to: URL(fileURLWithPath: root + "/assignments.json"))

        // The fake server runs through the agent's own process runner (its process group is gone when it returns).
        let serverControl = JobControl()
        let serverJob = JobRunner.Job(
            command: ["python3", "-c", fakeServer, root],
            environment: ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"],
            workDirectory: root,
            maxRuntimeSeconds: 60
        )
        let fake = Task {
            await JobRunner(configuration: JobRunner.Configuration(killGrace: .seconds(1)), logger: quietLogger)
                .run(serverJob, control: serverControl, sink: { _ in })
        }
        defer { serverControl.stop(.shutdown) }
        #expect(await eventually { FileManager.default.fileExists(atPath: root + "/port") })
        let port = try String(contentsOfFile: root + "/port", encoding: .utf8)

        // The agent's loops with a session made here: no enrollment, and the test process does not become the
        // reaper of orphans as the agent executable does. A heartbeat period of 30 s: a report within it can only
        // come from the wake-up.
        let server = "http://127.0.0.1:\(port)"
        let agent = AgentService(
            configuration: AgentConfiguration(
                server: server,
                joinToken: nil,
                stateDirectory: root + "/state",
                killGrace: .seconds(1),
                pollWaitSeconds: 1,
                advertiseAddress: "192.0.2.7"
            ),
            logger: quietLogger
        )
        try agent.configuration.stateDirectory.prepare()
        let enrollment = EnrollResponse(hostId: 1, hostName: "h", token: "t", heartbeatSeconds: 30, leaseSeconds: 90)
        let session = AgentService.Session(
            client: ComityClient(server: server, token: "t"),
            credential: Credential(server: server, enrollment: enrollment, enrolledAt: Date()),
            resources: HostResources(cpuMillis: 2_000, memoryBytes: 2 << 30),
            leftovers: []
        )
        let running = Task { try await agent.runLoops(session, registry: AttemptRegistry()) }
        defer { running.cancel() }

        let heartbeats = {
            let text = (try? String(contentsOfFile: root + "/heartbeats.jsonl", encoding: .utf8)) ?? ""
            return text.split(separator: "\n").compactMap {
                try? WireJSON.decoder().decode(Recorded.self, from: Data($0.utf8))
            }
        }
        let isHealthyReport = { (recorded: Recorded) in recorded.request.services?.first?.healthy == true }
        #expect(await eventually(within: .seconds(20)) { heartbeats().contains(where: isHealthyReport) })
        let all = heartbeats()
        let first = try #require(all.first)
        let healthy = try #require(all.first(where: isHealthyReport))
        // Well within the 30 s period.
        #expect(healthy.at - first.at < 15, "the healthy report came \(healthy.at - first.at) s after the first")
        #expect(healthy.request.attempts == [77])
        let status = try #require(healthy.request.services?.first)
        #expect(status.attempt == 77)
        #expect(status.restarts == 0)
        #expect(status.message == nil)
        #expect(status.url?.hasPrefix("http://192.0.2.7:") == true)
        // The "starting" report came first, also before the period was up.
        #expect(all.contains { $0.request.services?.first?.message == "starting" })

        running.cancel()
        _ = try? await running.value
        serverControl.stop(.shutdown)
        #expect(await fake.value == .stopped(.shutdown))
    }
}
