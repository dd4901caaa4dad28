#!/usr/bin/env python3
"""`make bench`: jetscribe side by side with its peers on this machine, one run, same files,
same model folder, same threads. Prints a markdown table. Not a test: the targets are reported,
not asserted. Timed rows are the median of BENCH_REPEAT (default 3) runs of each side, the two
sides taking turns so that a noisy moment of the machine does not favour one of them.

Rows:
  - transcription time, ours vs faster-whisper (int8, beam 5, VAD on) on a few minutes of speech
    with 2 s pauses (WAV), and on the English clips with pauses of 2 to 10 s (MP3), with the
    word error rate of both on the latter
  - the temperature fallback's cost: transcription time with the default temperatures vs
    temperature 0 only, on the same speech
  - 30 minutes of English clips after 5 to 60 s of silence (Opus), with word times: WER and the
    words that fall outside their clip's time span, ours vs faster-whisper
  - per corpus clip (10 languages): the language found and WER (CER for zh, ja), ours vs
    faster-whisper
  - word error rate on the English corpus clips, ours vs faster-whisper on the same model
  - the same clips in pink noise (ffmpeg's `anoisesrc`) at 10, 5 and 0 dB SNR: WER, ours vs
    faster-whisper, pooled over BENCH_NOISE_SEEDS (default 12) noise draws per level
  - Silero VAD beside earshot (PyPI), the same post-processing: speech kept on the clean and
    noisy clips, audio taken for speech on the 10 minutes without speech, time
  - 10 minutes without speech (noise of three colours, a tone, a chord progression from
    `aevalsrc`, silence): words written per minute, ours vs faster-whisper
  - upload throughput vs `cp` of the same file to the same disk, and the API's peak memory
  - decode time vs ffmpeg alone producing the same PCM
  - transcriber peak memory, 10 min vs 60 min of audio
  - 500 submissions at once: accepted, told to retry, dropped
  - scaling: 8 equal jobs through 1 then 2 transcriber processes of one thread each

Needs: target/release/jetscribe, models/, ffmpeg, nats-server, and a venv with faster-whisper
(made by `make bench` in .bench/venv). Corpus: ../shared/corpus (or BENCH_CORPUS).
BENCH_ROWS picks rows (transcription, fallback, pauses, assembly, corpus, wer, noise, nospeech,
upload, decode, memory, burst, scaling), e.g. `BENCH_ROWS=burst make bench`.
"""

import concurrent.futures
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# BENCH_BIN: another build of jetscribe to measure (e.g. a copy of an earlier one).
BIN = Path(os.environ.get("BENCH_BIN", ROOT / "target/release/jetscribe"))
MODEL = ROOT / "models/whisper-base"
CORPUS = Path(os.environ.get("BENCH_CORPUS", ROOT.parent / "shared/corpus"))
THREADS = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 2))
WORK = Path(os.environ.get("BENCH_DIR", ROOT / ".bench"))
REPEAT = int(os.environ.get("BENCH_REPEAT", 3))
# Which rows to run: a comma-separated subset of ROWS (default: all).
ROWS = ("transcription", "fallback", "pauses", "assembly", "corpus", "wer", "noise", "vad", "nospeech",
        "upload", "decode", "memory",
        "burst", "scaling")
ONLY = [row.strip() for row in os.environ.get("BENCH_ROWS", ",".join(ROWS)).split(",") if row.strip()]


def wanted(row):
    return row in ONLY
SAMPLE_RATE = 16000


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def pcm_of(clip):
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(clip), "-f", "s16le",
         "-ac", "1", "-ar", str(SAMPLE_RATE), "-"], check=True, capture_output=True)
    return out.stdout


def write_wav(path, pcm):
    import struct
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16) + b"data" + struct.pack(
        "<I", len(pcm))
    with open(path, "wb") as f:
        f.write(header)
        f.write(pcm)


def silence(seconds):
    return b"\0\0" * int(seconds * SAMPLE_RATE)


def manifest():
    rows = []
    with open(CORPUS / "MANIFEST.tsv", encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            rows.append(dict(zip(header, line.rstrip("\n").split("\t"))))
    return rows


# Word error rate after lower-casing and removing punctuation; numbers are left as written
# (both systems are scored the same way).
def words(text):
    return re.findall(r"[\w']+", text.lower())


def edits(ref, hyp):
    """Levenshtein distance between two sequences."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref):
        cur = [i + 1] + [0] * len(hyp)
        for j, h in enumerate(hyp):
            cur[j + 1] = min(prev[j] + (r != h), prev[j + 1] + 1, cur[j] + 1)
        prev = cur
    return prev[-1]


def wer(reference, hypothesis):
    ref, hyp = words(reference), words(hypothesis)
    return edits(ref, hyp), len(ref)


# Languages written without spaces: scored by character error rate.
WITHOUT_SPACES = ("zh", "ja")


def error_rate(language, reference, hypothesis):
    """WER, or CER for languages written without spaces (letters and digits only)."""
    if language in WITHOUT_SPACES:
        chars = lambda text: [c for c in text.lower() if c.isalnum()]
        ref = chars(reference)
        return edits(ref, chars(hypothesis)) / max(len(ref), 1)
    errors, count = wer(reference, hypothesis)
    return errors / max(count, 1)


class Service:
    """jetscribe with its stages as separate processes, against a private nats-server."""

    def __init__(self, data_dir, parts=("api", "decoder", "transcriber", "analyzer", "notifier"),
                 extra_env=None):
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.nats_dir = tempfile.mkdtemp(dir=WORK)
        self.nats = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", "-1", "-sd", self.nats_dir,
             "--ports_file_dir", self.nats_dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ports = Path(self.nats_dir) / f"nats-server_{self.nats.pid}.ports"
        for _ in range(200):
            if ports.exists() and ports.read_text().strip():
                break
            time.sleep(0.05)
        self.nats_url = json.loads(ports.read_text())["nats"][0]
        self.env = dict(os.environ, NATS_URL=self.nats_url, DATA_DIR=str(self.data_dir),
                        BIND_ADDR=f"127.0.0.1:{self.port}", WHISPER_MODEL=str(MODEL),
                        ONNXRUNTIME_LIB=str(ROOT / "vendor/onnxruntime/lib/libonnxruntime.so.1.31.1"),
                        VAD_MODEL=str(ROOT / "models/silero-vad/silero_vad.onnx"),
                        WHISPER_THREADS=str(THREADS), MAX_CONCURRENT_JOBS="1",
                        MAX_FILE_SIZE="100G", RUST_LOG="warn")
        self.env.update(extra_env or {})
        self.procs = {}
        for part in parts:
            self.start(part)
        self.wait_healthy()

    def start(self, part):
        """Starts `part`; `transcriber#2` is a second process of the transcriber."""
        self.procs[part] = subprocess.Popen([str(BIN), part.split("#")[0]], env=self.env,
                                            stdout=subprocess.DEVNULL)

    def restart(self, part):
        self.procs[part].send_signal(signal.SIGTERM)
        self.procs[part].wait(timeout=20)
        self.start(part)

    def peak_rss(self, part):
        with open(f"/proc/{self.procs[part].pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path):
        try:
            with urllib.request.urlopen(self.url(path), timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def wait_healthy(self):
        for _ in range(600):
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("jetscribe did not become healthy")

    def submit(self, path, query=""):
        """Uploads with curl; returns (job_id, seconds to the 202)."""
        start = time.perf_counter()
        out = subprocess.run(["curl", "-sS", "-X", "POST", self.url("/process" + query), "-F",
                              f"file=@{path}"], check=True, capture_output=True)
        elapsed = time.perf_counter() - start
        return json.loads(out.stdout)["job_id"], elapsed

    def wait(self, job_id, timeout=7200):
        deadline = time.time() + timeout
        while time.time() < deadline:
            code, status = self.get(f"/status/{job_id}")
            if status and status.get("status") in ("completed", "failed"):
                return status
            time.sleep(0.2)
        raise RuntimeError(f"job {job_id} did not end")

    def stage_seconds(self, job_id, stage):
        code, status = self.get(f"/status/{job_id}")
        run = status["stages"][stage]
        return run["seconds"]

    def transcript(self, job_id):
        return self.get(f"/result/{job_id}")[1]["result"]["transcript"]

    def close(self):
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.nats.terminate()
        self.nats.wait()
        shutil.rmtree(self.nats_dir, ignore_errors=True)


FASTER_WHISPER = r"""
import json, os, sys, time
from faster_whisper import WhisperModel
model_dir, threads, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
timed_words = os.environ.get("FW_WORDS") == "1"
model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
out = {}
for path in files:
    start = time.perf_counter()
    segments, info = model.transcribe(path, beam_size=5, vad_filter=True,
                                      word_timestamps=timed_words)
    segments = list(segments)
    text = " ".join(s.text.strip() for s in segments)
    out[path] = {"seconds": time.perf_counter() - start, "text": text, "language": info.language,
                 "words": [[w.start, w.end, w.word] for s in segments for w in (s.words or [])]}
print(json.dumps(out))
"""


def median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def spread(values, fmt="{:.1f}"):
    """The runs behind a median, for the table: "25.1 (24.8–26.0)"."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def post_file(port, body, boundary):
    """One multipart POST /process on its own connection; (status, Retry-After given, seconds)."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/process", body=body, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After") is not None, \
            time.perf_counter() - start
    except OSError:
        return None, False, time.perf_counter() - start
    finally:
        conn.close()


def submission_burst(service, clip, count):
    """`count` uploads of `clip` at once, each on its own connection and thread."""
    boundary = "jetscribe-bench-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{clip.name}\"\r\nContent-Type: audio/wav\r\n\r\n").encode() \
        + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        answers = list(pool.map(lambda _: post_file(service.port, body, boundary),
                                range(count)))
    return answers, time.perf_counter() - start


def faster_whisper(python, files, timed_words=False):
    script = WORK / "fw.py"
    script.write_text(FASTER_WHISPER)
    env = dict(os.environ, FW_WORDS="1" if timed_words else "0")
    out = subprocess.run([python, str(script), str(MODEL), str(THREADS), *map(str, files)],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def hour_file(media, speech):
    """60 min of Opus: twice the speech file followed by silence up to the half hour (so the
    transcriber also has speech to work on late in the file, without an hour of decoding time)."""
    hour = media / "hour.ogg"
    if not hour.exists():
        half = SAMPLE_RATE * 2 * 1800
        block = (speech + silence(1800))[:half]
        write_wav(media / "hour.wav", block * 2)
        ffmpeg("-i", str(media / "hour.wav"), "-c:a", "libopus", "-b:a", "32k", str(hour))
        os.remove(media / "hour.wav")
    return hour


def corpus_rows(service, python):
    """Every corpus clip, no language given: the language found and WER (CER for zh, ja), ours
    beside faster-whisper's."""
    clips = manifest()
    paths = [CORPUS / clip["file"] for clip in clips]
    jobs = [service.submit(path)[0] for path in paths]
    theirs = faster_whisper(python, paths)
    rows, found = [], 0
    for clip, path, job in zip(clips, paths, jobs):
        service.wait(job)
        result = service.get(f"/result/{job}")[1]["result"]
        language = result["language_detection"]["language"]
        ours = error_rate(clip["language"], clip["transcript"], result["transcript"])
        fw = error_rate(clip["language"], clip["transcript"], theirs[str(path)]["text"])
        found += language == clip["language"]
        measure = "CER" if clip["language"] in WITHOUT_SPACES else "WER"
        log(f"{clip['file']}: {language} {ours:.3f} | fw {theirs[str(path)]['language']} {fw:.3f}"
            f" | {result['transcript']!r}")
        rows.append((f"{measure}, {clip['file']} (%)", f"{100 * ours:.1f} ({language})",
                     f"faster-whisper {100 * fw:.1f} ({theirs[str(path)]['language']})",
                     f"{100 * (ours - fw):+.1f} points", "≤ +1 point"))
    rows.append(("languages found, corpus clips", f"{found} / {len(clips)}", "", "",
                 f"{len(clips)} / {len(clips)}"))
    return rows


def pauses_file(media, clips):
    """The clips three times over, each after a pause of 2 to 10 s (the same pauses every run),
    as MP3; returns the file, its reference transcript and its length (s)."""
    path = media / "pauses.mp3"
    pauses = random.Random(12)
    audio, reference = b"", []
    for _ in range(3):
        for clip in clips:
            audio += silence(pauses.uniform(2, 10)) + pcm_of(CORPUS / clip["file"])
            reference.append(clip["transcript"])
    audio += silence(2)
    if not path.exists():
        write_wav(media / "pauses.wav", audio)
        ffmpeg("-i", str(media / "pauses.wav"), "-c:a", "libmp3lame", "-b:a", "64k", str(path))
        os.remove(media / "pauses.wav")
    return path, " ".join(reference), len(audio) / 2 / SAMPLE_RATE


def pauses_rows(service, python, media, clips):
    """Speed and word error rate on the pauses file, ours beside faster-whisper's."""
    path, reference, seconds = pauses_file(media, clips)
    ours, theirs = [], []
    for run in range(REPEAT):
        job, _ = service.submit(path)
        service.wait(job)
        ours.append(service.stage_seconds(job, "transcribe"))
        our_text = service.transcript(job)
        fw = faster_whisper(python, [path])[str(path)]
        theirs.append(fw["seconds"])
        log(f"pauses run {run + 1}: ours {ours[-1]:.1f} s, faster-whisper {theirs[-1]:.1f} s")
    ours_wer = 100 * wer(reference, our_text)[0] / wer(reference, our_text)[1]
    fw_wer = 100 * wer(reference, fw["text"])[0] / wer(reference, fw["text"])[1]
    return [
        (f"transcription, {seconds/60:.1f} min, pauses of 2–10 s, MP3 (s)", spread(ours),
         f"faster-whisper {spread(theirs)}", f"{median(theirs)/median(ours):.2f}x as fast",
         "≥ 1.5x"),
        ("WER on that file (%)", f"{ours_wer:.1f}", f"faster-whisper {fw_wer:.1f}",
         f"{ours_wer - fw_wer:+.1f} points", "≤ +1 point"),
    ]


def assembly_file(media, clips):
    """30 minutes: the clips in turn, each after 5 to 60 s of silence (the same every run), as
    Opus; returns the file, its reference and each clip's span in seconds."""
    path = media / "assembly.ogg"
    pauses = random.Random(30)
    audio, reference, spans = bytearray(), [], []
    limit = 30 * 60 * SAMPLE_RATE * 2
    turn = 0
    while True:
        clip = clips[turn % len(clips)]
        speech = pcm_of(CORPUS / clip["file"])
        gap = silence(pauses.uniform(5, 60))
        if len(audio) + len(gap) + len(speech) > limit:
            break
        audio += gap
        start = len(audio) / 2 / SAMPLE_RATE
        audio += speech
        spans.append((start, len(audio) / 2 / SAMPLE_RATE))
        reference.append(clip["transcript"])
        turn += 1
    audio += silence((limit - len(audio)) / 2 / SAMPLE_RATE)
    if not path.exists():
        write_wav(media / "assembly.wav", bytes(audio))
        ffmpeg("-i", str(media / "assembly.wav"), "-c:a", "libopus", "-b:a", "32k", str(path))
        os.remove(media / "assembly.wav")
    return path, " ".join(reference), spans


def words_outside(words, spans, slack_s=0.5):
    """Words (start, end, text) that lie in no span (give or take `slack_s`)."""
    return [w for w in words
            if not any(start - slack_s <= w[0] and w[1] <= end + slack_s for start, end in spans)]


def assembly_rows(service, python, media, clips):
    """The 30-minute assembly with word times: WER and words outside their clip's span, ours
    beside faster-whisper's (deterministic: one run)."""
    path, reference, spans = assembly_file(media, clips)
    job, _ = service.submit(path, "?word_timestamps=true")
    service.wait(job)
    result = service.get(f"/result/{job}")[1]["result"]
    ours_words = [(w["start"], w["end"], w["word"]) for s in result["segments"]
                  for w in s.get("words") or []]
    fw = faster_whisper(python, [path], timed_words=True)[str(path)]
    ours_out, fw_out = words_outside(ours_words, spans), words_outside(fw["words"], spans)
    ours_wer = 100 * wer(reference, result["transcript"])[0] / wer(reference, result["transcript"])[1]
    fw_wer = 100 * wer(reference, fw["text"])[0] / wer(reference, fw["text"])[1]
    log(f"assembly: {len(spans)} clips; ours {ours_wer:.1f}, outside {ours_out[:5]} | "
        f"fw {fw_wer:.1f}, outside {fw_out[:5]}")
    return [
        (f"WER, 30 min: {len(spans)} English clips after 5–60 s of silence, Opus (%)",
         f"{ours_wer:.1f}", f"faster-whisper {fw_wer:.1f}", f"{ours_wer - fw_wer:+.1f} points",
         "≤ +1 point"),
        ("words outside their clip's time span (±0.5 s), that file",
         f"{len(ours_out)} of {len(ours_words)}", f"faster-whisper {len(fw_out)} of {len(fw['words'])}",
         "", "0"),
    ]


def fallback_rows(service, speech_wav, speech_s):
    """The temperature fallback's cost on clean speech: the transcribe stage with the default
    temperatures beside one with temperature 0 only (no fallback), runs alternating."""
    data = Path(tempfile.mkdtemp(dir=WORK))
    greedy = Service(data, extra_env={"WHISPER_TEMPERATURES": "0"})
    ours, without = [], []
    try:
        for run in range(REPEAT):
            for side, times in ((service, ours), (greedy, without)):
                job, _ = side.submit(speech_wav)
                side.wait(job)
                times.append(side.stage_seconds(job, "transcribe"))
            log(f"fallback run {run + 1}: with {ours[-1]:.1f} s, without {without[-1]:.1f} s")
    finally:
        greedy.close()
        shutil.rmtree(data, ignore_errors=True)
    cost = 100 * (median(ours) / median(without) - 1)
    return [(f"transcription, {speech_s/60:.1f} min of speech, with the fallback (s)", spread(ours),
             f"temperature 0 only {spread(without)}", f"{cost:+.1f} % for the fallback", "≤ +10 %")]


def rms(pcm):
    samples = memoryview(pcm).cast("h")
    return (sum(x * x for x in samples) / max(len(samples), 1)) ** 0.5


def noisy_file(media, clips, snr_db, seed=0):
    """The clips one after another (1 s apart), each mixed with pink noise (`anoisesrc`, seeded
    by `seed` and the clip) at `snr_db` below its own loudness, as WAV; returns the file and its
    reference."""
    path = media / (f"noise-{snr_db}dB.wav" if seed == 0 else f"noise-{snr_db}dB-s{seed}.wav")
    reference = " ".join(clip["transcript"] for clip in clips)
    if path.exists():
        return path, reference
    mixed = bytearray()
    for number, clip in enumerate(clips):
        speech = pcm_of(CORPUS / clip["file"])
        seconds = len(speech) / 2 / SAMPLE_RATE
        noise = subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
             f"anoisesrc=color=pink:amplitude=0.5:seed={100 * seed + number + 1}:d={seconds}"
             f":r={SAMPLE_RATE}",
             "-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"],
            check=True, capture_output=True).stdout
        gain = rms(speech) / max(rms(noise), 1e-9) / 10 ** (snr_db / 20)
        voice, hiss = memoryview(speech).cast("h"), memoryview(noise).cast("h")
        out = memoryview(bytearray(len(speech))).cast("h")
        for i in range(len(voice)):
            value = voice[i] + gain * (hiss[i] if i < len(hiss) else 0)
            out[i] = max(-32768, min(32767, int(value)))
        mixed += bytes(out) + silence(1)
    write_wav(path, bytes(mixed))
    return path, reference


# Noise draws per level: one draw is a knife edge (a different seed, or float rounding in the
# features, moves either side's WER by several points), so each level pools several.
NOISE_SEEDS = int(os.environ.get("BENCH_NOISE_SEEDS", "12"))


def noise_rows(service, python, media, clips):
    """WER on the English clips in pink noise at 10, 5 and 0 dB SNR, ours beside
    faster-whisper's (deterministic: one run each), pooled over NOISE_SEEDS noise draws."""
    rows = []
    for snr_db in (10, 5, 0):
        files = [noisy_file(media, clips, snr_db, seed) for seed in range(NOISE_SEEDS)]
        fw_texts = faster_whisper(python, [path for path, _ in files])
        totals = {"ours": [0, 0], "fw": [0, 0]}
        draws = {"ours": [], "fw": []}
        for path, reference in files:
            job, _ = service.submit(path)
            service.wait(job)
            texts = {"ours": service.transcript(job), "fw": fw_texts[str(path)]["text"]}
            for side, text in texts.items():
                errors, words = wer(reference, text)
                totals[side][0] += errors
                totals[side][1] += words
                draws[side].append(100 * errors / words)
            log(f"noise {snr_db} dB {path.name}: ours {draws['ours'][-1]:.1f} "
                f"{texts['ours']!r} | fw {draws['fw'][-1]:.1f} {texts['fw']!r}")
        ours, fw = (100 * totals[side][0] / totals[side][1] for side in ("ours", "fw"))
        each = {side: "/".join(f"{value:.1f}" for value in draws[side]) for side in draws}
        rows.append((f"WER, English clips in pink noise at {snr_db} dB SNR, {len(files)} draws "
                     "pooled (each) (%)", f"{ours:.1f} ({each['ours']})",
                     f"faster-whisper {fw:.1f} ({each['fw']})", f"{ours - fw:+.1f} points",
                     "≤ +1 point"))
    return rows


# Ten minutes without speech: pink, brown and white noise, a tone with vibrato, a chord
# progression (three voices, a new root every 2 s) and silence.
NOSPEECH_SOURCES = [
    "anoisesrc=color=pink:amplitude=0.3:seed=7:d=120",
    "anoisesrc=color=brown:amplitude=0.5:seed=8:d=120",
    "anoisesrc=color=white:amplitude=0.05:seed=9:d=60",
    "aevalsrc='0.3*sin(2*PI*440*t+3*sin(2*PI*5*t))':d=60",
    "aevalsrc='st(0,if(lt(mod(t,8),2),220,if(lt(mod(t,8),4),293.66,if(lt(mod(t,8),6),329.63,"
    "261.63))));0.12*sin(2*PI*ld(0)*t)+0.1*sin(2*PI*ld(0)*1.26*t)+0.08*sin(2*PI*ld(0)*1.5*t)'"
    ":d=180",
    "anullsrc=d=60",
]


def nospeech_file(media):
    path = media / "nospeech.mp3"
    if not path.exists():
        args = []
        for source in NOSPEECH_SOURCES:
            args += ["-f", "lavfi", "-i", source]
        inputs = "".join(f"[{n}:a]aformat=sample_rates=16000:channel_layouts=mono[a{n}];"
                         for n in range(len(NOSPEECH_SOURCES)))
        joined = "".join(f"[a{n}]" for n in range(len(NOSPEECH_SOURCES)))
        ffmpeg(*args, "-filter_complex",
               f"{inputs}{joined}concat=n={len(NOSPEECH_SOURCES)}:v=0:a=1",
               "-c:a", "libmp3lame", "-b:a", "64k", str(path))
    return path


def nospeech_rows(service, python, media):
    """Words written per minute on 10 minutes without speech, ours beside faster-whisper's."""
    path = nospeech_file(media)
    job, _ = service.submit(path)
    service.wait(job)
    ours_text = service.transcript(job)
    fw_text = faster_whisper(python, [path])[str(path)]["text"]
    ours, fw = len(words(ours_text)) / 10, len(words(fw_text)) / 10
    log(f"no speech: ours {ours_text!r} | fw {fw_text!r}")
    return [("words per minute, 10 min without speech (noise, tones, chords, silence)",
             f"{ours:.1f}", f"faster-whisper {fw:.1f}", f"{ours - fw:+.1f}", "0")]


# Silero VAD (faster-whisper's, the model and post-processing jetscribe runs: tests/vad.rs) beside
# earshot (PyPI `earshot`, the same network as the Rust crate) behind the same post-processing:
# earshot's 16 ms scores averaged per 32 ms frame stand in for Silero's probabilities.
VAD_SCRIPT = r"""
import json, sys, time
import numpy as np
import earshot
from faster_whisper import decode_audio, vad
options = vad.VadOptions(min_silence_duration_ms=2000, speech_pad_ms=400)

class Earshot:
    def __call__(self, audio):
        detector = earshot.Detector()
        frames = audio.reshape(-1, 256).astype(np.float32)
        scores = np.array([detector.predict_f32(frame) for frame in frames], dtype=np.float32)
        return scores.reshape(-1, 2).mean(axis=1).reshape(-1, 1)

silero = vad.get_vad_model()
out = {}
for path in sys.argv[1:]:
    audio = decode_audio(path, sampling_rate=16000)
    out[path] = {}
    for name, model in (("silero", silero), ("earshot", Earshot())):
        vad.get_vad_model = lambda model=model: model
        start = time.perf_counter()
        chunks = vad.get_speech_timestamps(audio, options)
        out[path][name] = {"seconds": time.perf_counter() - start,
                           "chunks": [[c["start"] / 16000, c["end"] / 16000] for c in chunks]}
print(json.dumps(out))
"""


def overlap_s(chunks, spans):
    return sum(max(0.0, min(end, b) - max(start, a)) for start, end in spans for a, b in chunks)


def vad_rows(python, media, clips):
    """Silero VAD beside earshot: how much of the speech each keeps (clean clips after long
    silences, the same clips in pink noise) and how much of 10 minutes without speech each
    takes for speech, with the same post-processing, and the time each takes."""
    clip_s = [len(pcm_of(CORPUS / clip["file"])) / 2 / SAMPLE_RATE for clip in clips]
    noisy_spans, at = [], 0.0
    for seconds in clip_s:
        noisy_spans.append((at, at + seconds))
        at += seconds + 1
    assembly, _, assembly_spans = assembly_file(media, clips)
    sets = [("clean clips after 5–60 s of silence", assembly, assembly_spans)]
    for snr_db in (10, 5, 0):
        sets.append((f"clips in pink noise at {snr_db} dB", noisy_file(media, clips, snr_db)[0],
                     noisy_spans))
    nospeech = nospeech_file(media)
    script = WORK / "vad.py"
    script.write_text(VAD_SCRIPT)
    paths = [str(path) for _, path, _ in sets] + [str(nospeech)]
    out = json.loads(subprocess.run([python, str(script), *paths], check=True,
                                    capture_output=True, text=True).stdout.strip().splitlines()[-1])
    rows = []
    for name, path, spans in sets:
        kept = {side: 100 * overlap_s(out[str(path)][side]["chunks"], spans)
                / sum(end - start for start, end in spans) for side in ("silero", "earshot")}
        rows.append((f"VAD: speech kept, {name} (%)", f"Silero {kept['silero']:.1f}",
                     f"earshot {kept['earshot']:.1f}", "", "100"))
    taken = {side: sum(b - a for a, b in out[str(nospeech)][side]["chunks"])
             for side in ("silero", "earshot")}
    rows.append(("VAD: audio taken for speech, 10 min without speech (s)",
                 f"Silero {taken['silero']:.1f}", f"earshot {taken['earshot']:.1f}", "", "0"))
    total = {side: sum(out[path][side]["seconds"] for path in paths)
             for side in ("silero", "earshot")}
    rows.append(("VAD: time for these files, one thread of Python (s)",
                 f"Silero {total['silero']:.1f}", f"earshot {total['earshot']:.1f}", "", ""))
    for path in paths:
        log(f"vad {Path(path).name}: " + " | ".join(
            f"{side} {out[path][side]['chunks'][:6]}" for side in ("silero", "earshot")))
    return rows


def scaling_run(clip, transcribers, jobs):
    """Seconds from the first submission of `jobs` copies of `clip` to the end of the last,
    through one api, decoder, analyzer and notifier and `transcribers` transcriber processes
    of one thread each (the models loaded, the transcribers waiting, before the clock starts)."""
    data = Path(tempfile.mkdtemp(dir=WORK))
    parts = ["api", "decoder", "analyzer", "notifier"]
    parts += [f"transcriber#{n}" for n in range(transcribers)]
    service = Service(data, parts, {"WHISPER_THREADS": "1", "RATE_LIMIT": "off"})
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            _, body = service.get("/models")
            if body and body["models"][0]["idle_workers"] >= transcribers:
                break
            time.sleep(0.2)
        start = time.perf_counter()
        ids = [service.submit(clip)[0] for _ in range(jobs)]
        for job in ids:
            if service.wait(job)["status"] != "completed":
                raise RuntimeError(f"scaling job {job} failed")
        return time.perf_counter() - start
    finally:
        service.close()
        shutil.rmtree(data, ignore_errors=True)


def main():
    python = sys.argv[1] if len(sys.argv) > 1 else sys.executable
    WORK.mkdir(parents=True, exist_ok=True)
    media = WORK / "media"
    media.mkdir(exist_ok=True)
    rows = []

    english = [r for r in manifest() if r["language"] == "en"]
    # A few minutes of speech: the English clips, each followed by a 2 s pause, three times.
    speech = b"".join((pcm_of(CORPUS / r["file"]) + silence(2)) for r in english) * 3
    speech_wav = media / "speech.wav"
    write_wav(speech_wav, speech)
    speech_s = len(speech) / 2 / SAMPLE_RATE
    log(f"speech file: {speech_s:.0f} s")

    data = Path(tempfile.mkdtemp(dir=WORK))
    service = Service(data)
    try:
        if wanted("transcription"):
            # 1. Transcription time (transcribe stage, from its start to its end, model loaded).
            ours, theirs = [], []
            for run in range(REPEAT):
                job, _ = service.submit(speech_wav)
                service.wait(job)
                ours.append(service.stage_seconds(job, "transcribe"))
                theirs.append(faster_whisper(python, [speech_wav])[str(speech_wav)]["seconds"])
                log(f"transcription run {run + 1}: ours {ours[-1]:.1f} s, faster-whisper {theirs[-1]:.1f} s")
            rows.append((f"transcription, {speech_s/60:.1f} min of speech (s)", spread(ours),
                         f"faster-whisper {spread(theirs)}",
                         f"{median(theirs)/median(ours):.2f}x as fast", "≥ 1.3x"))

        if wanted("fallback"):
            rows += fallback_rows(service, speech_wav, speech_s)

        if wanted("pauses"):
            rows += pauses_rows(service, python, media, english)

        if wanted("assembly"):
            rows += assembly_rows(service, python, media, english)

        if wanted("corpus"):
            rows += corpus_rows(service, python)

        if wanted("wer"):
            # 2. WER on the English clips (deterministic: one run).
            clips = [CORPUS / r["file"] for r in english]
            jobs = [service.submit(c)[0] for c in clips]
            ours_err = ours_n = 0
            for r, j in zip(english, jobs):
                service.wait(j)
                e, n = wer(r["transcript"], service.transcript(j))
                ours_err += e
                ours_n += n
            fw_out = faster_whisper(python, clips)
            fw_err = fw_n = 0
            for r, c in zip(english, clips):
                e, n = wer(r["transcript"], fw_out[str(c)]["text"])
                fw_err += e
                fw_n += n
            ours_wer, fw_wer = 100 * ours_err / ours_n, 100 * fw_err / fw_n
            rows.append((f"WER, {len(clips)} English clips (%)", f"{ours_wer:.1f}",
                         f"faster-whisper {fw_wer:.1f}", f"{ours_wer - fw_wer:+.1f} points",
                         "≤ +1 point"))

        if wanted("noise"):
            rows += noise_rows(service, python, media, english)

        if wanted("vad"):
            rows += vad_rows(python, media, english)
        if wanted("nospeech"):
            rows += nospeech_rows(service, python, media)

        if wanted("upload"):
            # 3. Upload throughput against cp to the same disk. The API's memory before: small
            # uploads only.
            api_small = service.peak_rss("api")
            big = media / "upload.bin"
            if not big.exists() or big.stat().st_size != 1 << 30:
                with open(big, "wb") as f:
                    for _ in range(1024):
                        f.write(os.urandom(1 << 20))
            ours, theirs = [], []
            for run in range(REPEAT):
                job, up_s = service.submit(big)
                ours.append(up_s)
                # Neither side syncs to the platter: both measure the path through the page cache.
                start = time.perf_counter()
                subprocess.run(["cp", str(big), str(data / "cp-copy.bin")], check=True)
                theirs.append(time.perf_counter() - start)
                os.remove(data / "cp-copy.bin")
                # Not media: the job fails at the probe and its blob is kept until cleanup.
                service.wait(job)
                log(f"upload run {run + 1}: ours {ours[-1]:.2f} s, cp {theirs[-1]:.2f} s")
            rows.append(("upload 1 GiB (s)", spread(ours, "{:.2f}"), f"cp {spread(theirs, '{:.2f}')}",
                         f"{median(theirs)/median(ours):.2f} of cp's throughput", "≥ 0.8"))
            api_big = service.peak_rss("api")
            # Bounded by design: 256 KiB reads, 8 MiB parts, at most 2 parts in flight.
            rows.append((f"API peak RSS, small uploads only / after {REPEAT} × 1 GiB (MiB)",
                         f"{api_small >> 20} / {api_big >> 20}", "",
                         f"+{(api_big - api_small) >> 20} MiB for {REPEAT} GiB uploaded",
                         "bounded (≤ +24 MiB of buffers)"))

        if wanted("decode"):
            # 4. Decoder against ffmpeg alone, on 60 min of compressed audio.
            hour = hour_file(media, speech)
            # The decode runs go to a service without a transcriber, so that the repeated hour
            # does not have to be transcribed each time.
            decode_data = Path(tempfile.mkdtemp(dir=WORK))
            decode_only = Service(decode_data, parts=("api", "decoder"))
            ours, theirs = [], []
            try:
                for run in range(REPEAT):
                    start = time.perf_counter()
                    ffmpeg("-i", str(hour), "-vn", "-ac", "1", "-ar", "16000", "-f", "s16le",
                           str(decode_data / "ffmpeg.pcm"))
                    theirs.append(time.perf_counter() - start)
                    os.remove(decode_data / "ffmpeg.pcm")
                    job, _ = decode_only.submit(hour)
                    deadline = time.time() + 600
                    while not decode_only.get(f"/status/{job}")[1]["stages"].get("decode", {}).get("seconds"):
                        if time.time() > deadline:
                            raise RuntimeError("decode did not finish")
                        time.sleep(0.2)
                    ours.append(decode_only.stage_seconds(job, "decode"))
                    log(f"decode run {run + 1}: ours {ours[-1]:.2f} s, ffmpeg {theirs[-1]:.2f} s")
            finally:
                decode_only.close()
                shutil.rmtree(decode_data, ignore_errors=True)
            rows.append(("decode 60 min of Opus (s)", spread(ours, "{:.2f}"),
                         f"ffmpeg {spread(theirs, '{:.2f}')}",
                         f"{median(theirs)/median(ours):.2f} of ffmpeg's speed", "≥ 0.9"))

        if wanted("memory"):
            # 5. Transcriber peak memory: 10 min against 60 min (fresh process each).
            hour = hour_file(media, speech)
            service.restart("transcriber")
            job, _ = service.submit(hour)
            service.wait(job)
            hour_peak = service.peak_rss("transcriber")
            ten = media / "ten.ogg"
            if not ten.exists():
                ffmpeg("-i", str(hour), "-t", "600", "-c", "copy", str(ten))
            service.restart("transcriber")
            job, _ = service.submit(ten)
            service.wait(job)
            ten_peak = service.peak_rss("transcriber")
            rows.append(("transcriber peak RSS, 10 vs 60 min (MiB)", f"{ten_peak >> 20} / {hour_peak >> 20}",
                         "", f"ratio {hour_peak/ten_peak:.2f}", "≤ 1.2"))

        if wanted("burst"):
            # 6. 500 submissions of a 1 s clip at once, against a fresh service without a rate limit.
            load_data = Path(tempfile.mkdtemp(dir=WORK))
            loaded = Service(load_data, extra_env={"RATE_LIMIT": "off"})
            try:
                second = media / "second.wav"
                write_wav(second, silence(1))
                answers, burst_s = submission_burst(loaded, second, 500)
            finally:
                loaded.close()
                shutil.rmtree(load_data, ignore_errors=True)
            accepted = [s for status, _, s in answers if status == 202]
            retry = sum(1 for status, after, _ in answers if status in (429, 503) and after)
            dropped = len(answers) - len(accepted) - retry
            latencies = sorted(s for _, _, s in answers)
            p50 = latencies[len(latencies) // 2] * 1000
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
            log(f"burst: {len(accepted)} accepted, {retry} told to retry, {dropped} dropped, "
                f"{burst_s:.1f} s")
            rows.append(("POST /process, 500 at once: accepted / told to retry / dropped",
                         f"{len(accepted)} / {retry} / {dropped}", "",
                         f"{len(accepted) / burst_s:.0f} accepted/s; latency p50 {p50:.0f} ms, "
                         f"p99 {p99:.0f} ms", "none dropped"))
    finally:
        service.close()
        shutil.rmtree(data, ignore_errors=True)

    if wanted("scaling"):
        # 7. Scaling: 8 equal jobs (half a minute of the English clips each) through 1, then
        # 2, transcriber processes of one thread: the speed-up of adding a process.
        clip = media / "scaling.wav"
        write_wav(clip, speech[: SAMPLE_RATE * 2 * 30])
        one, two = [], []
        for run in range(REPEAT):
            one.append(scaling_run(clip, 1, 8))
            two.append(scaling_run(clip, 2, 8))
            log(f"scaling run {run + 1}: 1 transcriber {one[-1]:.1f} s, 2 transcribers {two[-1]:.1f} s")
        rows.append(("8 jobs of 30 s, 1 vs 2 transcriber processes of 1 thread (s)", spread(one),
                     f"2 processes {spread(two)}", f"{median(one)/median(two):.2f}x as fast",
                     "≥ 1.8x"))

    print(f"\njetscribe benchmark — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"{THREADS} threads, model {MODEL.name} int8, beam 5, "
          f"median (min–max) of {REPEAT} runs per timed row\n")
    print("| measure | jetscribe | peer | result | target |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
