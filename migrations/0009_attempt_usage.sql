-- GPU usage of an attempt (issue 7): what its agent sampled with nvidia-smi while it ran, sent with the finish
-- report, as the wire's AttemptUsage JSON ({"gpus": [{"uuid", "samples", "max_memory_bytes",
-- "max_device_memory_bytes", "mean_utilization_percent", "max_utilization_percent"}], "sample_interval_seconds"}).
-- Null when nothing was sampled (no GPUs, no nvidia-smi, an agent older than sampling, or a very short job).
alter table attempts add column usage jsonb;
