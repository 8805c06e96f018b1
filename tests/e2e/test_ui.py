"""The web UI on the real control plane, in a real headless browser (Debian's chromium
driven through chromedriver by Selenium), as users whose ServiceAccount tokens come
from TokenRequest and whose rights come from real Roles.

Screenshots of the runs list and of a timeline are saved under the test's tmp dir,
and also into $RATLINE_UI_SCREENSHOTS when set (docs/ui-*.png are made that way).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from ratline.store import NewRun
from ratline.store.postgres import PostgresStore
from tests.e2e.conftest import REPO_ROOT, Kubectl, OperatorProcess, free_port, wait_for

pytestmark = pytest.mark.e2e

EXAMPLES = REPO_ROOT / "examples"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SAGA_LANES = [
    "charge-payment",
    "reserve-stock",
    "create-shipment",
    "compensate:reserve-stock",
    "compensate:charge-payment",
]


@dataclass
class UiServer:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def ui(operator: OperatorProcess, tmp_path: Path) -> Iterator[UiServer]:
    """`ratline ui` for the test's namespace, with the admin kubeconfig for its reviews."""
    port = free_port()
    log = tmp_path / "ui.log"
    argv = [
        sys.executable, "-m", "ratline.cli.main", "ui",
        "--dsn", operator.dsn,
        "--kubeconfig", str(operator.kubeconfig),
        "--namespace", operator.namespace,
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    server = UiServer(f"http://127.0.0.1:{port}", proc, log)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"ratline ui exited {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(server.url + "/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for("the UI to answer", healthy, timeout=60)
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        sys.stdout.write(log.read_text(errors="replace")[-5000:])


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium / chromium-driver missing: run tests/cluster/sysdeps.sh")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--disable-gpu", "--window-size=1280,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def user_token(kubectl: Kubectl, name: str, rules: list[dict[str, Any]], ns: str = "") -> str:
    """A ServiceAccount bound to a Role with `rules`; its token from TokenRequest."""
    ns = ns or kubectl.namespace
    kubectl.run("create", "serviceaccount", name, "-n", ns, namespaced=False)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": ns},
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
    }
    kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump_all([role, binding]), namespaced=False)
    token = kubectl.run("create", "token", name, "-n", ns, "--duration=1h", namespaced=False)
    return token.stdout.strip()


RUNS_ALL = {"apiGroups": ["ratline.dev"], "resources": ["workflowruns"], "verbs": ["*"]}
WORKFLOWS_READ = {
    "apiGroups": ["ratline.dev"],
    "resources": ["workflows", "workflowschedules"],
    "verbs": ["get", "list"],
}
RUNS_READ = {
    "apiGroups": ["ratline.dev"],
    "resources": ["workflowruns"],
    "verbs": ["get", "list", "watch"],
}
PODS_READ = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}


def login(driver: webdriver.Chrome, ui: UiServer, token: str, path: str) -> None:
    driver.get(ui.url + "/login?next=" + urllib.parse.quote(path))
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    wait_for(f"the browser to reach {path}", lambda: driver.current_url.endswith(path), 30)


def apply_example(kubectl: Kubectl, example: str, **changes: Any) -> str:
    workflow = yaml.safe_load((EXAMPLES / example / "workflow.yaml").read_text())
    run = yaml.safe_load((EXAMPLES / example / "run.yaml").read_text())
    for key, value in changes.items():
        run["spec"]["input"][key] = value
    kubectl.apply(workflow, run)
    return str(run["metadata"]["name"])


def screenshot(driver: webdriver.Chrome, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), f"no screenshot {name}"
    target = os.environ.get("RATLINE_UI_SCREENSHOTS")
    if target:
        shutil.copy(path, Path(target) / name)
    return path


def rows(driver: webdriver.Chrome) -> dict[str, str]:
    """name -> phase of the listed runs, read in one script call: the page's poller
    replaces the table body every 2 s, so element handles would go stale."""
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll('#rows tr.run'))"
        ".map(r => [r.dataset.name, r.dataset.phase, r.cells[5].textContent]);"
    )
    return {str(name): str(phase) for name, phase, _ in found}


def waiting_for(driver: webdriver.Chrome, run: str) -> str:
    found = driver.execute_script(
        "const r = document.querySelector(`#rows tr.run[data-name='${arguments[0]}']`);"
        "return r ? r.cells[5].textContent : null;",
        run,
    )
    return str(found)


@pytest.mark.timeout(600)
def test_runs_list_updates_live_and_the_saga_timeline_shows_compensation(
    ui: UiServer, kubectl: Kubectl, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    token = user_token(kubectl, "ui-admin", [RUNS_ALL, WORKFLOWS_READ, PODS_READ])
    ns = kubectl.namespace
    login(browser, ui, token, f"/ns/{ns}/runs")
    assert rows(browser) == {}
    # Applied with kubectl while the page is open: the rows appear without a reload.
    name = apply_example(kubectl, "order_saga", address={
        "name": "Ada Example", "street": "1 Harbour Road", "city": "Nowhere", "country": "ZZ"
    })  # fmt: skip
    hello = apply_example(kubectl, "hello")
    approval = apply_example(kubectl, "approval")
    wait_for("the run in the list", lambda: name in rows(browser), timeout=90)
    kubectl.wait_phase(name, "Failed", timeout=120)
    kubectl.wait_phase(hello, "Succeeded", timeout=120)
    kubectl.wait_phase(approval, "Suspended", timeout=120)
    expected = {name: "Failed", hello: "Succeeded", approval: "Suspended"}
    wait_for("the list to show the phases", lambda: rows(browser) == expected, 60)
    assert waiting_for(browser, approval).strip() == "approval"
    screenshot(browser, tmp_path, "ui-runs.png")
    # Filters: phases, and a label selector resolved with the user's token.
    browser.get(f"{ui.url}/ns/{ns}/runs?phase=Failed&phase=Succeeded")
    assert rows(browser) == {name: "Failed", hello: "Succeeded"}
    kubectl.run("label", "workflowrun", hello, "team=payments")
    browser.get(f"{ui.url}/ns/{ns}/runs?label=team%3Dpayments")
    assert rows(browser) == {hello: "Succeeded"}
    browser.get(f"{ui.url}/ns/{ns}/runs?q=approval")
    assert rows(browser) == {approval: "Suspended"}
    browser.get(f"{ui.url}/ns/{ns}/schedules")  # a page either way (the CRD may be missing)
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Schedules in {ns}"
    browser.get(f"{ui.url}/ns/{ns}/runs")
    browser.find_element(By.LINK_TEXT, name).click()
    wait_for("the run page", lambda: browser.find_elements(By.ID, "timeline"), 30)
    lanes = browser.find_elements(By.CSS_SELECTOR, "#timeline g.lane")
    names = [str(g.get_attribute("data-name")) for g in lanes]
    assert names == SAGA_LANES
    by_name = dict(zip(names, lanes, strict=True))
    for lane in SAGA_LANES:
        bars = by_name[lane].find_elements(By.TAG_NAME, "rect")
        kinds = {r.get_attribute("data-kind") for r in bars}
        expected_kinds = {"failed"} if lane == "create-shipment" else (
            {"compensation"} if lane.startswith("compensate:") else {"attempt"}
        )  # fmt: skip
        assert kinds == expected_kinds, (lane, kinds)
    markers = browser.find_elements(By.CSS_SELECTOR, "#timeline line.marker")
    assert [m.get_attribute("data-label") for m in markers] == ["compensation"]
    assert browser.find_element(By.ID, "phase").text == "Failed"
    history = browser.find_element(By.ID, "history").text
    assert "CompensationStarted" in history
    assert "RunFailed" in history
    screenshot(browser, tmp_path, "ui-timeline.png")

    # Retry from the page: the CLI's own checks apply (the compensated steps must run
    # again), then its retry makes a new run and the UI opens it.
    browser.find_element(By.CSS_SELECTOR, "#retry button").click()
    wait_for("the refusal", lambda: browser.find_elements(By.ID, "problem"), 30)
    assert "compensated" in browser.find_element(By.ID, "problem").text
    browser.find_element(By.CSS_SELECTOR, "#retry input[name=from_step]").send_keys(SAGA_LANES[0])
    browser.find_element(By.CSS_SELECTOR, "#retry button").click()
    wait_for("an answer", lambda: browser.find_elements(By.CSS_SELECTOR, "#notice, #problem"), 60)
    assert not browser.find_elements(By.ID, "problem"), browser.find_element(By.ID, "problem").text
    retried = urllib.parse.urlsplit(browser.current_url).path.rsplit("/", 1)[-1]
    assert retried != name
    assert kubectl.get("workflowrun", retried) is not None
    assert f"retries {name}" in browser.find_element(By.ID, "notice").text

    # Cancel from the page: the waiting approval ends Cancelled.
    browser.get(f"{ui.url}/ns/{ns}/runs/{approval}")
    browser.find_element(By.CSS_SELECTOR, "#cancel button").click()
    wait_for("the notice", lambda: browser.find_elements(By.ID, "notice"), 30)
    assert kubectl.wait_phase(approval, "Cancelled", timeout=90)["phase"] == "Cancelled"


@pytest.mark.timeout(400)
def test_a_signal_sent_from_the_form_resumes_the_approval(
    ui: UiServer, kubectl: Kubectl, browser: webdriver.Chrome
) -> None:
    token = user_token(kubectl, "ui-approver", [RUNS_ALL])
    name = apply_example(kubectl, "approval")
    kubectl.wait_phase(name, "Suspended", timeout=90)
    login(browser, ui, token, f"/ns/{kubectl.namespace}/runs/{name}")
    # The input is previewed; its full value comes on demand, into the page.
    browser.find_element(By.CSS_SELECTOR, 'a.full[href$="what=input"]').click()
    box = browser.find_element(By.ID, "full-value")
    wait_for("the full input", lambda: "New build server" in box.text, 30)
    assert json.loads(box.text)["request_id"] == "po-7731"
    form = browser.find_element(By.CSS_SELECTOR, 'tr[data-promise="approval"] form.signal')
    data = form.find_element(By.NAME, "data")
    data.clear()
    data.send_keys(json.dumps({"approved": True, "by": "dana"}))
    form.find_element(By.TAG_NAME, "button").click()
    wait_for("the notice", lambda: browser.find_elements(By.ID, "notice"), 30)
    assert "signalled (approval)" in browser.find_element(By.ID, "notice").text
    status = kubectl.wait_phase(name, "Succeeded", "Failed", timeout=90)
    assert status["phase"] == "Succeeded", status
    assert json.loads(status["result"])["outcome"] == "approved"
    browser.refresh()
    assert browser.find_element(By.ID, "phase").text == "Succeeded"


def _get(url: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def _post(url: str, token: str, form: dict[str, str]) -> int:
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.timeout(400)
def test_a_reader_of_one_namespace_sees_nothing_of_another_and_cannot_act(
    ui: UiServer, kubectl: Kubectl, operator: OperatorProcess, browser: webdriver.Chrome
) -> None:
    ns_a = kubectl.namespace
    ns_b = f"t-ui-b-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", ns_b, namespaced=False)
    try:
        secret_b = f"secret-run-{uuid.uuid4().hex[:6]}"
        asyncio.run(_store_run(operator.dsn, ns_b, secret_b))
        reader = user_token(kubectl, "ui-reader", [RUNS_READ])
        name = apply_example(kubectl, "approval")
        kubectl.wait_phase(name, "Suspended", timeout=90)

        assert _get(f"{ui.url}/ns/{ns_a}/runs", None)[0] == 401
        assert _get(f"{ui.url}/ns/{ns_a}/runs", "not-a-token")[0] == 401
        code, page = _get(f"{ui.url}/ns/{ns_a}/runs", reader)
        assert code == 200
        assert name in page
        for path in (f"/ns/{ns_b}/runs", f"/ns/{ns_b}/runs/_rows", f"/ns/{ns_b}/runs/{secret_b}"):
            code, page = _get(ui.url + path, reader)
            assert code == 403, path
            assert secret_b not in page
            assert ns_b not in page.replace(path, "")

        code, page = _get(f"{ui.url}/ns/{ns_a}/runs/{name}", reader)
        assert code == 200
        assert 'id="read-only"' in page
        assert 'class="signal"' not in page
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf, "the logout form carries the reader's CSRF value"
        signal = {"csrf": csrf[1], "promise": "approval", "data": "true"}
        assert _post(f"{ui.url}/ns/{ns_a}/runs/{name}/signal", reader, signal) == 403
        assert _post(f"{ui.url}/ns/{ns_a}/runs/{name}/cancel", reader, {"csrf": csrf[1]}) == 403
        assert not (kubectl.get("workflowrun", name) or {})["spec"].get("signals")

        login(browser, ui, reader, f"/ns/{ns_a}/runs/{name}")
        assert browser.find_elements(By.ID, "read-only")
        assert not browser.find_elements(By.CSS_SELECTOR, "form.signal")
        browser.get(f"{ui.url}/ns/{ns_b}/runs")
        assert browser.find_element(By.ID, "forbidden").text == "Forbidden"
        assert secret_b not in browser.page_source
    finally:
        kubectl.run("delete", "namespace", ns_b, "--wait=false", namespaced=False, check=False)


async def _store_run(dsn: str, namespace: str, name: str) -> None:
    """A run of namespace B in the shared store: what a broken gate would leak."""
    store = await PostgresStore.connect(dsn)
    try:
        await store.create_run(
            NewRun(id=str(uuid.uuid4()), namespace=namespace, name=name, workflow="secret")
        )
    finally:
        await store.close()
