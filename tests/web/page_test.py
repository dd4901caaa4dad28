#!/usr/bin/env python3
"""End-to-end test of jetscribe's web page in headless Chromium (playwright, sync API).

Opens the page, gives the API key when the server wants one (first checking that the page asks
for it and turns a wrong key away), uploads a media file, waits for the job's progress to reach
100 % and for the transcript, plays a segment and a word from the uploaded media, checks the
language, downloads the SRT, checks that no API key went into an address or localStorage, and
keeps a screenshot. Prints a JSON summary on stdout; exits 1 with a message on stderr at the
first failure.

usage: page_test.py --url http://127.0.0.1:8000 --file tests/fixtures/jfk.flac \\
           --screenshot target/web-page.png [--api-key KEY] [--chromium /usr/bin/chromium]

Needs `pip install playwright` and a Chromium (Debian's `chromium`); `playwright install` is
not needed: the browser is the one given by --chromium.
"""

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

PHRASE = "ask not what your country can do for you"
WRONG_KEY = "not-a-key-of-this-server-0000"

# Records every value the job's progress takes and the stages shown as active, before the page's
# own script runs.
WATCH_PROGRESS = """
window.__seen = { progress: [], stages: [] };
new MutationObserver((records) => {
  for (const record of records) {
    const node = record.target;
    if (record.attributeName === 'data-progress' && node.dataset.progress !== undefined) {
      const value = Number(node.dataset.progress);
      const seen = window.__seen.progress;
      if (seen[seen.length - 1] !== value) seen.push(value);
    }
    if (record.attributeName === 'data-state' && node.dataset.state === 'active') {
      const stages = window.__seen.stages;
      if (!stages.includes(node.dataset.stage)) stages.push(node.dataset.stage);
    }
  }
}).observe(document, { subtree: true, attributes: true,
                       attributeFilter: ['data-progress', 'data-state'] });
"""


class Failure(Exception):
    """A check that did not hold."""


def check(condition, message):
    if not condition:
        raise Failure(message)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the server's base URL")
    parser.add_argument("--file", required=True, help="the media to upload (the JFK clip)")
    parser.add_argument("--screenshot", required=True, help="where to keep a PNG of the page")
    parser.add_argument("--api-key", help="a key of the server's API_KEYS, when it has some")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium to drive")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds the whole test may take (default 300)")
    return parser.parse_args()


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def ms(self, at_most=None):
        """Milliseconds left (at least 1), capped at `at_most` seconds."""
        left = self.end - time.monotonic()
        if at_most is not None:
            left = min(left, at_most)
        return max(1.0, left * 1000.0)


def wait_for(page, script, deadline, what, arg=None, at_most=None):
    """Waits for `script` (a function: under the page's Content-Security-Policy a bare
    expression would need eval) to be truthy in the page; fails with `what` otherwise."""
    try:
        return page.wait_for_function(script, arg=arg, timeout=deadline.ms(at_most), polling=100)
    except PlaywrightTimeout:
        raise Failure(f"timed out waiting for {what}") from None


def give_key(page, key, deadline, summary):
    """The page must ask for a key, refuse a wrong one, then take the right one."""
    wait_for(page, "() => document.body.dataset.auth === 'needed'", deadline,
             "the page to ask for an API key (does the server answer 401 without one?)",
             at_most=30)
    check(page.locator("#key-panel").is_visible(), "the key prompt is not shown")
    summary["key_prompt_shown"] = True

    page.fill("#key-input", WRONG_KEY)
    page.click("#key-form button[type=submit]")
    wait_for(page, "() => document.body.dataset.auth === 'rejected'", deadline,
             "the page to refuse a wrong key", at_most=30)
    message = page.locator("#key-message").inner_text()
    check("not accepted" in message.lower(), f"no message about the wrong key: {message!r}")
    summary["wrong_key_refused"] = True

    page.fill("#key-input", key)
    page.press("#key-input", "Enter")
    wait_for(page, "() => document.body.dataset.auth === 'ok'", deadline,
             "the page to accept the API key", at_most=30)
    check(not page.locator("#key-panel").is_visible(), "the key prompt stays after a good key")
    summary["key_accepted"] = True


def follow_job(page, deadline, summary):
    """Waits until the job has ended and its result is on the page."""
    wait_for(page, "() => document.querySelector('li.job[data-job-id]') !== null", deadline,
             "the upload to be accepted (a job id)", at_most=120)
    job = page.locator("li.job").first
    summary["job_id"] = job.get_attribute("data-job-id")
    wait_for(page, """() => {
        const job = document.querySelector('li.job');
        return job && ['completed', 'failed', 'cancelled'].includes(job.dataset.status);
    }""", deadline, "the job to end and its result to show")
    status = job.get_attribute("data-status")
    if status != "completed":
        error = job.locator(".error").inner_text() if job.locator(".error").is_visible() else ""
        raise Failure(f"the job ended {status}: {error}")
    seen = page.evaluate("() => window.__seen")
    summary["progress_seen"] = seen["progress"]
    summary["stages_seen"] = seen["stages"]
    value = page.eval_on_selector("li.job .work-bar", "bar => bar.value")
    percent = job.locator(".work-percent").inner_text()
    check(value == 100, f"the job's progress bar stopped at {value}")
    check(percent.replace("\u00a0", " ").strip() == "100 %", f"the job's progress reads {percent!r}")
    check(seen["progress"] and seen["progress"][-1] == 100,
          f"progress never reached 100: {seen['progress']}")
    check(seen["progress"] == sorted(seen["progress"]), f"progress went back: {seen['progress']}")
    upload = page.eval_on_selector("li.job .upload-bar", "bar => bar.value")
    check(upload == 100, f"the upload bar stopped at {upload}")
    return job


def check_transcript(job, summary):
    text = " ".join(job.locator(".segments").inner_text().split())
    summary["transcript"] = text
    check(PHRASE in text.lower(), f"the transcript lacks {PHRASE!r}: {text!r}")
    segments = job.locator(".segment")
    summary["segments"] = segments.count()
    check(segments.count() >= 1, "no segment is listed")
    first_time = segments.first.locator(".segment-time").inner_text()
    check(re.search(r"\d+:\d\d", first_time), f"the first segment has no time: {first_time!r}")
    summary["first_segment_time"] = first_time

    language = job.locator(".language").inner_text()
    summary["language"] = language
    check(re.search(r"\ben\b|English", language), f"the language shown is {language!r}")
    topics = job.locator(".topics li").all_inner_texts()
    summary["topics"] = topics


def check_playback(page, job, deadline, summary):
    """Clicking a segment (then a word) seeks the player there and plays."""
    media = job.locator(".media")
    check(media.count() == 1, "no audio or video player for the uploaded file")
    handle = media.element_handle()
    wait_for(page, "media => media.readyState >= 1 && Number.isFinite(media.duration)", deadline,
             "the player to load the uploaded media", arg=handle, at_most=30)

    segment = job.locator(".segment").first
    start = float(segment.get_attribute("data-start"))
    end = float(segment.get_attribute("data-end"))
    # Move the player away from the segment's start first, so that the click must seek back.
    away = min(max(start + 3.0, (start + end) / 2), max(start, end - 0.5))
    handle.evaluate("(media, at) => { media.pause(); media.currentTime = at; }", away)
    wait_for(page, "([media, at]) => !media.seeking && Math.abs(media.currentTime - at) < 0.5",
             deadline, "the player to seek away", arg=[handle, away], at_most=10)

    segment.locator(".segment-time").click()
    at = handle.evaluate("media => media.currentTime")
    check(abs(at - start) <= 0.5,
          f"clicking the segment at {start:.2f} s put the player at {at:.2f} s")
    try:
        page.wait_for_function("([media, from]) => !media.paused && media.currentTime > from + 0.1",
                               arg=[handle, at], timeout=deadline.ms(15), polling=100)
        played = True
    except PlaywrightTimeout:
        played = False
    state = handle.evaluate("m => ({time: m.currentTime, paused: m.paused, error: m.error && m.error.code})")
    check(played or not state["paused"],
          f"the player did not play after clicking the segment: {state}")
    check(page.locator("li.job .segment.playing").count() >= 1 or state["time"] >= end,
          "the segment being played is not highlighted")
    summary["segment_click"] = {"start": start, "player_at": round(at, 3), "played": played,
                                "played_to": round(state["time"], 3)}

    words = job.locator(".word")
    if words.count() > 0:
        word = words.filter(has_text=re.compile(r"^country", re.I)).first
        if word.count() == 0:
            word = words.nth(words.count() // 2)
        word_start = float(word.get_attribute("data-start"))
        word.click()
        at = handle.evaluate("media => media.currentTime")
        check(abs(at - word_start) <= 0.5,
              f"clicking the word at {word_start:.2f} s put the player at {at:.2f} s")
        summary["word_click"] = {"word": word.inner_text(), "start": word_start,
                                 "player_at": round(at, 3)}

    # The keyboard does the same: Enter on a focused segment plays it from its start.
    handle.evaluate("(media, at) => { media.pause(); media.currentTime = at; }", away)
    wait_for(page, "([media, at]) => !media.seeking && Math.abs(media.currentTime - at) < 0.5",
             deadline, "the player to seek away", arg=[handle, away], at_most=10)
    segment.focus()
    page.keyboard.press("Enter")
    at = handle.evaluate("media => media.currentTime")
    check(abs(at - start) <= 0.5,
          f"Enter on the segment at {start:.2f} s put the player at {at:.2f} s")
    summary["segment_enter"] = {"start": start, "player_at": round(at, 3)}
    handle.evaluate("media => media.pause()")


def check_download(page, job, media_path, deadline, summary):
    link = job.locator(".download[data-format=srt]")
    check(link.is_visible(), "no SRT download link")
    with page.expect_download(timeout=deadline.ms(60)) as download_info:
        link.click()
    download = download_info.value
    expected_name = Path(media_path).stem + ".srt"
    check(download.suggested_filename == expected_name,
          f"the SRT downloads as {download.suggested_filename!r}, not {expected_name!r}")
    failure = download.failure()
    check(failure is None, f"the SRT download failed: {failure}")
    content = Path(download.path()).read_text(encoding="utf-8")
    check(content.startswith("1\n00:00:00"), f"the SRT does not start with a first cue: {content[:40]!r}")
    check("-->" in content, "the SRT has no cue times")
    summary["srt"] = {"name": download.suggested_filename, "bytes": len(content.encode()),
                      "head": content.splitlines()[:3]}


def check_key_kept(page, key, urls, summary):
    """The keys typed go in headers only: never in an address (logs, history, Referer), never
    in storage that outlives the tab."""
    keys = [key, WRONG_KEY] if key else []
    leaked = [url for url in urls if any(secret in url for secret in keys)]
    check(not leaked, f"an API key went into an address: {leaked}")
    lasting = page.evaluate("() => JSON.stringify(localStorage)")
    check(not any(secret in lasting for secret in keys), "an API key was kept in localStorage")
    check(not any(secret in page.url for secret in keys), "an API key is in the page's address")
    summary["key_only_in_headers"] = True


def run(args, summary):
    deadline = Deadline(args.timeout)
    screenshot = Path(args.screenshot)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    problems = []  # console errors and uncaught exceptions of the page
    http_errors = summary["http_errors"] = []  # the 401s of the key prompt belong here
    urls = []  # every address the page asked for
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=args.chromium,
            headless=True,
            # Root in a container has no user namespaces for Chromium's sandbox.
            args=["--no-sandbox"],
        )
        try:
            context = browser.new_context(accept_downloads=True,
                                          viewport={"width": 1000, "height": 900})
            page = context.new_page()
            page.on("console", lambda message: message.type == "error" and problems.append(
                f"console: {message.text}"))
            page.on("pageerror", lambda error: problems.append(f"exception: {error}"))
            page.on("response", lambda response: response.status >= 400 and http_errors.append(
                f"{response.status} {response.request.method} {response.url}"))
            page.on("request", lambda request: urls.append(request.url))
            page.add_init_script(WATCH_PROGRESS)
            page.goto(args.url, wait_until="load", timeout=deadline.ms(60))
            try:
                if args.api_key:
                    give_key(page, args.api_key, deadline, summary)
                else:
                    state = wait_for(page, """() => ['ok', 'needed'].includes(document.body.dataset.auth)
                                              && document.body.dataset.auth""",
                                     deadline, "the page to reach the server", at_most=30).json_value()
                    check(state == "ok", "the server wants an API key: pass --api-key")
                page.set_input_files("#file-input", args.file)
                job = follow_job(page, deadline, summary)
                check_transcript(job, summary)
                check_playback(page, job, deadline, summary)
                check_download(page, job, args.file, deadline, summary)
                csp = [problem for problem in problems if "Content Security Policy" in problem]
                check(not csp, f"the page broke its Content-Security-Policy: {csp}")
                uncaught = [problem for problem in problems if problem.startswith("exception")]
                check(not uncaught, f"the page threw: {uncaught}")
                # The key prompt's 401s are expected; any other error answer is not.
                refused = [error for error in http_errors if not error.startswith("401 ")]
                check(not refused, f"the page got error answers: {refused}")
                check_key_kept(page, args.api_key, urls, summary)
            finally:
                # Kept even when a check fails: it shows where the page stood.
                try:
                    page.screenshot(path=str(screenshot), full_page=True)
                    summary["screenshot"] = str(screenshot)
                except PlaywrightError as error:
                    print(f"page_test: no screenshot: {error}", file=sys.stderr)
        finally:
            browser.close()
    summary["console_errors"] = problems
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def main():
    args = parse_args()
    if not os.path.isfile(args.file):
        sys.exit(f"page_test: no such file: {args.file}")
    if not os.access(args.chromium, os.X_OK):
        sys.exit(f"page_test: no Chromium at {args.chromium} (apt-get install chromium)")
    summary = {"url": args.url, "file": args.file, "with_api_key": bool(args.api_key)}
    try:
        run(args, summary)
    except (Failure, PlaywrightError) as failure:
        summary["ok"] = False
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        kind = "" if isinstance(failure, Failure) else " (browser)"
        print(f"page_test: FAILED{kind}: {failure}", file=sys.stderr)
        sys.exit(1)
    summary["ok"] = True
    print(json.dumps(summary, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
