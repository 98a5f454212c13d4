import Foundation

/// A test fixture: a fake `nvidia-smi`, a shell script that prints canned answers in `nvidia-smi`'s formats.
///
/// It stands in for the real tool on machines without a GPU, so it tests the agent's parsing, its choice of queries
/// and its aggregation, not a driver. Each answer is a file beside the script (`query`, `legacy-query`, `list`,
/// `apps`, `usage`, `by-uuid`); an answer named `NAME.sh` is sourced instead (a dynamic answer), and `NAME.fail` makes
/// that query fail with its text. Every call's arguments are appended to `calls`.
struct FakeNvidiaSMI {
    let directory: String
    var executable: String { "\(directory)/nvidia-smi" }

    static let script = """
        #!/bin/sh
        # Test fixture: a fake nvidia-smi printing canned answers (files beside it) in nvidia-smi's formats.
        PATH=/usr/bin:/bin:$PATH
        here=$(dirname "$0")
        echo "$*" >> "$here/calls"
        case "$*" in
          "--query-gpu=index,uuid,name,memory.total,mig.mode.current --format=csv,noheader,nounits") answer=query ;;
          "--query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits") answer=legacy-query ;;
          "-L") answer=list ;;
          "--query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits") answer=apps ;;
          "--query-gpu=uuid,utilization.gpu,memory.used --format=csv,noheader,nounits") answer=usage ;;
          "--query-gpu=uuid,name --format=csv,noheader -i "*) answer=by-uuid ;;
          *) echo "fake nvidia-smi: unexpected arguments: $*" >&2; exit 2 ;;
        esac
        if [ -f "$here/$answer.fail" ]; then cat "$here/$answer.fail" >&2; exit 2; fi
        if [ -f "$here/$answer.sh" ]; then . "$here/$answer.sh"; exit 0; fi
        if [ -f "$here/$answer" ]; then cat "$here/$answer"; exit 0; fi
        echo "fake nvidia-smi: no answer for $answer" >&2
        exit 6
        """

    /// Writes the script and `answers` (file name → content) into a new temporary folder.
    init(answers: [String: String]) throws {
        directory = try makeTemporaryDirectory()
        // The executable is written by another process (`install`), never opened for writing here: a process this test
        // process forks meanwhile (tests run in parallel) would inherit such a descriptor until its exec, and running
        // the script then fails with ETXTBSY ("Text file busy").
        let source = directory + "/nvidia-smi.source"
        try Self.script.write(toFile: source, atomically: true, encoding: .utf8)
        let install = Process()
        install.executableURL = URL(fileURLWithPath: "/usr/bin/install")
        install.arguments = ["-m", "755", source, executable]
        try install.run()
        install.waitUntilExit()
        guard install.terminationStatus == 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: executable])
        }
        for (name, content) in answers { try set(name, content) }
    }

    func set(_ name: String, _ content: String) throws {
        try content.write(toFile: "\(directory)/\(name)", atomically: true, encoding: .utf8)
    }

    /// The arguments of every call so far, one line each.
    var calls: [String] {
        ((try? String(contentsOfFile: "\(directory)/calls", encoding: .utf8)) ?? "")
            .split(separator: "\n").map(String.init)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }

    /// `by-uuid.sh`: answers `-i UUID` with the line of `by-uuid` that starts with that UUID, as `nvidia-smi` does.
    static let byUUIDScript = """
        for last; do :; done
        grep "^$last," "$here/by-uuid" || { echo "No devices were found" >&2; exit 6; }
        """
}

/// Synthetic `nvidia-smi` answers of hosts we have no captures of.
enum SyntheticGPUs {
    /// 8 × H100 80GB, MIG disabled.
    static let eightH100 = (0..<8).map {
        "\($0), GPU-8e4f1c2\($0)-0000-4000-8000-00000000000\($0), NVIDIA H100 80GB HBM3, 81559, Disabled\n"
    }.joined()

    /// An A100 80GB in MIG mode (two 3g.40gb and one 1g.10gb, as a test of the parser: the hardware cannot hold
    /// all three at once), an H100 with MIG disabled, and a V100, which has no MIG (`[N/A]`).
    static let mixedQuery = """
        0, GPU-a1000000-0000-4000-8000-000000000000, NVIDIA A100-SXM4-80GB, 81920, Enabled
        1, GPU-b1000000-0000-4000-8000-000000000001, NVIDIA H100 80GB HBM3, 81559, Disabled
        2, GPU-c1000000-0000-4000-8000-000000000002, Tesla V100-SXM2-16GB, 16160, [N/A]

        """
    static let mixedList = """
        GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-a1000000-0000-4000-8000-000000000000)
          MIG 3g.40gb     Device  0: (UUID: MIG-3a000000-0000-5000-8000-000000000000)
          MIG 3g.40gb     Device  1: (UUID: MIG-3b000000-0000-5000-8000-000000000001)
          MIG 1g.10gb     Device  2: (UUID: MIG-1c000000-0000-5000-8000-000000000002)
        GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-b1000000-0000-4000-8000-000000000001)
        GPU 2: Tesla V100-SXM2-16GB (UUID: GPU-c1000000-0000-4000-8000-000000000002)

        """
}
