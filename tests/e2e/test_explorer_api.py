"""The explorer's JSON API against a live Ganache devnet after a real federated run: every number it serves equals
what the chain and IPFS hold. Also: bad input is a clear 4xx, the CLI views, Anvil, and `demo --explorer`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from e2e_helpers import Cli, start_explorer, wait_explorer_synced
from explorer_e2e import AGGREGATORS, BAD_DEVICE, EXPLORER_ROUNDS, HONEST_DEVICES, THRESHOLD, ExplorerRun

from fedchain.app.devnet import Devnet, free_port, terminate
from fedchain.chain import EventFollower, TaskClient, connect, devnet_account
from fedchain.chain.events import ChainEvent
from fedchain.storage import IpfsClient, digest_to_cid

pytestmark = pytest.mark.e2e

# The events whose transactions count towards a round's gas: a round's transactions from its submissions to the
# reveal that finalises it (or the window close that fails it), and late reveals of it.
ROUND_GAS_EVENTS = (
    "UpdateSubmitted",
    "RoundExtended",
    "RoundReadyForAggregation",
    "ResultCommitted",
    "RevealOpened",
    "ResultRevealed",
    "AggregateCommitted",
    "AggregatorFault",
    "AggregationFailed",
)


def get(run: ExplorerRun, path: str, status: int = 200) -> dict:
    response = httpx.get(run.url + path, timeout=30)
    assert response.status_code == status, (path, response.status_code, response.text[:500])
    return response.json()


@pytest.fixture(scope="module")
def chain(explorer_run: ExplorerRun) -> dict:
    """What the chain itself says about the run (events and receipts read directly, not through the explorer)."""
    w3 = connect(explorer_run.state.rpc_url)
    client = TaskClient(w3, explorer_run.task)
    events = list(EventFollower(w3, explorer_run.task, client.abi).poll())
    receipts = {e.tx_hash: w3.eth.get_transaction_receipt(e.tx_hash) for e in events}
    return {"w3": w3, "client": client, "events": events, "receipts": receipts}


def test_overview_matches_the_node_and_ipfs(explorer_run: ExplorerRun, chain: dict) -> None:
    o = get(explorer_run, "/api/overview")
    w3 = chain["w3"]
    assert o["chain"]["chain_id"] == w3.eth.chain_id == 1337
    assert o["chain"]["client_version"] == w3.client_version
    latest = w3.eth.get_block(o["chain"]["latest_block"])
    assert o["chain"]["base_fee"] == latest["baseFeePerGas"]
    top = o["latest_blocks"][0]
    assert top["hash"] == "0x" + bytes(latest["hash"]).hex() and top["tx_count"] == len(latest["transactions"])
    with IpfsClient(explorer_run.state.ipfs_api) as ipfs:
        assert o["ipfs"]["id"] == ipfs.id()["ID"]
        assert o["ipfs"]["pins"] == len(ipfs.pin_ls())
    (task,) = o["tasks"]
    assert task["address"] == explorer_run.task and task["phase"] == "finished"
    assert task["current_round"] == task["num_rounds"] == EXPLORER_ROUNDS
    assert get(explorer_run, "/api/health")["lag"] == 0


def test_task_configuration_participants_and_rounds_match_the_chain(explorer_run: ExplorerRun, chain: dict) -> None:
    t = get(explorer_run, f"/api/task/{explorer_run.task}")
    client: TaskClient = chain["client"]
    config = client.config()
    assert t["config"]["model_spec_cid"] == digest_to_cid(config.model_spec_digest)
    assert t["config"]["initial_model_cid"] == digest_to_cid(config.initial_model_digest)
    assert (t["config"]["num_rounds"], t["config"]["min_updates"], t["config"]["max_updates"]) == (
        config.num_rounds,
        config.min_updates,
        config.max_updates,
    )
    assert t["config"]["round_duration"] == config.round_duration and t["config"]["strategy"] == "FedAvg"
    assert t["config"]["aggregator_threshold"] == config.aggregator_threshold == THRESHOLD
    assert t["config"]["aggregation_duration"] == config.aggregation_duration
    assert t["config"]["strategy_params"] == {}  # FedAvg has none; the reports say so
    assert t["final_model_cid"] == digest_to_cid(client.global_model_digest())

    roles = {(p["address"], p["role"]): p for p in t["participants"]}
    devices = [devnet_account(2 + i).address for i in range(HONEST_DEVICES + 1)]
    for device in devices:
        assert roles[(device, "device")]["status"] == "approved" and client.device_info(device).approved
        assert roles[(device, "device")]["updates"] == EXPLORER_ROUNDS
    assert roles[(devnet_account(BAD_DEVICE).address, "device")]["rejected"] == EXPLORER_ROUNDS
    for aggregator in explorer_run.aggregators:
        assert roles[(aggregator, "aggregator")]["status"] == "active" and client.is_aggregator(aggregator)
    assert client.is_admin(roles[(devnet_account(0).address, "admin")]["address"])

    # Aggregators: commitments, reveals and faults as the chain counts them.
    fault_events = defaultdict(int)
    for e in chain["events"]:
        if e.name == "AggregatorFault":
            fault_events[e.args["aggregator"]] += 1
    listed = {a["address"]: a for a in t["aggregators"]}
    assert set(listed) == set(explorer_run.aggregators)
    for address, a in listed.items():
        info = client.aggregator_info(address)
        assert a["faults"] == info.faults == fault_events[address]
        assert roles[(address, "aggregator")]["faults"] == info.faults
        assert a["commits"] == sum(
            1 for e in chain["events"] if e.name == "ResultCommitted" and e.args["aggregator"] == address
        )
        assert a["reveals"] == sum(
            1 for e in chain["events"] if e.name == "ResultRevealed" and e.args["aggregator"] == address
        )
    assert listed[explorer_run.liar]["faults"] >= 1 and listed[explorer_run.liar]["agreed"] == 0
    assert all(listed[a]["faults"] == 0 for a in explorer_run.honest_aggregators)
    assert t["totals"]["faults"] == sum(fault_events.values())
    assert t["failed_rounds"] == [] and t["totals"]["rounds_failed"] == client.failed_rounds() == 0

    by_round: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for e in chain["events"]:
        if "round" in e.args:
            by_round[e.args["round"]][e.name].append(e)
    assert [r["round"] for r in t["rounds"]] == list(range(1, EXPLORER_ROUNDS + 1))
    with IpfsClient(explorer_run.state.ipfs_api) as ipfs:
        for r in t["rounds"]:
            events = by_round[r["round"]]
            (commit,) = events["AggregateCommitted"]
            (opened,) = events["RoundOpened"]
            report = json.loads(ipfs.cat(digest_to_cid(bytes(commit.args["reportDigest"]))))
            assert r["state"] == "committed"
            assert r["model_cid"] == digest_to_cid(client.round_model_digest(r["round"]))
            assert r["report_cid"] == digest_to_cid(bytes(commit.args["reportDigest"]))
            assert r["received"] == len(events["UpdateSubmitted"]) == HONEST_DEVICES + 1
            assert r["required"] == config.max_updates
            assert r["accepted"] == commit.args["acceptedUpdates"] == HONEST_DEVICES
            assert r["rejected"] == len(report["rejected"]) == 1
            assert r["accuracy"] == report["metrics"]["accuracy"] and r["loss"] == report["metrics"]["loss"]
            assert r["opened_block"] == opened.block_number and r["closed_block"] == commit.block_number
            gas_txs = {e.tx_hash for name in ROUND_GAS_EVENTS for e in events[name]}
            assert r["gas"] == sum(chain["receipts"][h]["gasUsed"] for h in gas_txs)
            opened_at = chain["w3"].eth.get_block(opened.block_number)["timestamp"]
            committed_at = chain["w3"].eth.get_block(commit.block_number)["timestamp"]
            assert r["duration_s"] == committed_at - opened_at
    assert t["totals"]["gas"] == sum(r["gas"] for r in t["rounds"])
    (failed,) = t["failed_transactions"]
    assert failed["hash"] == explorer_run.reverted_tx and "WrongRound" in failed["revert"]


def test_round_updates_match_events_receipts_and_the_report(explorer_run: ExplorerRun, chain: dict) -> None:
    with IpfsClient(explorer_run.state.ipfs_api) as ipfs:
        for number in range(1, EXPLORER_ROUNDS + 1):
            r = get(explorer_run, f"/api/task/{explorer_run.task}/round/{number}")
            submitted = [e for e in chain["events"] if e.name == "UpdateSubmitted" and e.args["round"] == number]
            (commit,) = [e for e in chain["events"] if e.name == "AggregateCommitted" and e.args["round"] == number]
            report = json.loads(ipfs.cat(digest_to_cid(bytes(commit.args["reportDigest"]))))
            outcome = {a["device"]: ("accepted", None) for a in report["accepted"]}
            outcome.update({x["device"]: ("rejected", x["reason"]) for x in report["rejected"]})
            assert len(r["updates"]) == len(submitted)
            for u, e in zip(r["updates"], submitted, strict=True):
                assert u["device"] == e.args["device"]
                assert u["cid"] == digest_to_cid(bytes(e.args["updateDigest"]))
                assert u["num_samples"] == e.args["numSamples"]
                assert u["tx_hash"] == e.tx_hash and u["block_number"] == e.block_number
                assert u["gas_used"] == chain["receipts"][e.tx_hash]["gasUsed"]
                assert (u["status"], u["reason"]) == outcome[u["device"]]
            bad = next(u for u in r["updates"] if u["device"] == explorer_run.bad_device)
            assert bad["status"] == "rejected" and bad["reason"] == "MalformedWeights" and bad["detail"]
            a = r["aggregate"]
            assert a["aggregator"] == commit.args["aggregator"] and a["aggregator"] in explorer_run.honest_aggregators
            assert a["committed_tx"] == commit.tx_hash and a["committed_block"] == commit.block_number
            assert a["inputs_hash"] == "0x" + bytes(commit.args["inputsHash"]).hex() == report["inputs_hash"]
            assert a["model_cid"] == report["model_cid"]

            _check_agreement(explorer_run, r, chain["events"], commit)

            honest = next(u for u in r["updates"] if u["status"] == "accepted")
            one = get(explorer_run, f"/api/task/{explorer_run.task}/round/{number}/update/{honest['device']}")
            assert one["cid"] == honest["cid"] and one["tx"]["hash"] == honest["tx_hash"]
            assert one["aggregate"]["model_cid"] == a["model_cid"]


def _check_agreement(run: ExplorerRun, r: dict, events: list[ChainEvent], commit: ChainEvent) -> None:
    """The round's agreement as served equals its ResultCommitted, ResultRevealed and AggregatorFault events."""
    number = r["round"]

    def of(name: str) -> dict:
        return {e.args["aggregator"]: e for e in events if e.name == name and e.args["round"] == number}

    commits, reveals, faults = of("ResultCommitted"), of("ResultRevealed"), of("AggregatorFault")
    g = r["agreement"]
    assert g["status"] == "agreed" and (g["threshold"], g["aggregators"]) == (THRESHOLD, len(AGGREGATORS))
    assert g["commits"] == len(commits) and g["finalised_by"] == commit.args["aggregator"]
    assert set(g["faulted"]) == set(faults) and set(faults) <= {run.liar}
    assert g["agreed"] == len(run.honest_aggregators)  # k = 2 agreeing reveals: both honest ones, never the liar
    assert g["summary"] == f"{g['agreed']} of {len(AGGREGATORS)} aggregators agreed (threshold {THRESHOLD})"
    entries = {e["aggregator"]: e for e in g["entries"]}
    assert set(entries) == set(commits) == set(run.aggregators)  # everyone committed
    final = (commit.block_number, commit.log_index)
    for address, e in entries.items():
        c = commits[address]
        assert e["commitment"] == "0x" + bytes(c.args["commitment"]).hex()
        assert (e["commit_tx"], e["commit_block"]) == (c.tx_hash, c.block_number)
        v = reveals.get(address)
        if v is None:  # possible only for the liar, had its commitment been overwritten before it revealed
            assert address == run.liar and e["verdict"] == "not-revealed"
            continue
        assert e["model_cid"] == digest_to_cid(bytes(v.args["modelDigest"]))
        assert e["report_cid"] == digest_to_cid(bytes(v.args["reportDigest"]))
        assert e["accepted"] == v.args["acceptedUpdates"]
        assert (e["reveal_tx"], e["reveal_block"]) == (v.tx_hash, v.block_number)
        assert e["late"] == ((v.block_number, v.log_index) > final)
        assert e["fault"] == (address in faults)
        assert e["finalised"] == (v.tx_hash == commit.tx_hash)
        if address in run.honest_aggregators:
            assert e["verdict"] == "agreed" and e["model_cid"] == r["model_cid"]
        else:
            assert e["verdict"] == "faulted" and e["model_cid"] != r["model_cid"]
            assert e["fault_count"] == faults[address].args["faults"]


def test_transaction_block_address_and_content_pages(explorer_run: ExplorerRun, chain: dict) -> None:
    w3 = chain["w3"]
    submit = next(e for e in chain["events"] if e.name == "UpdateSubmitted")
    x = get(explorer_run, f"/api/tx/{submit.tx_hash}")
    receipt = chain["receipts"][submit.tx_hash]
    tx = w3.eth.get_transaction(submit.tx_hash)
    assert x["block_number"] == receipt["blockNumber"] and x["gas_used"] == receipt["gasUsed"]
    assert x["from"] == tx["from"] and x["to"] == explorer_run.task and x["status"] == 1
    assert x["gas_price"] == receipt["effectiveGasPrice"]
    assert x["call"]["function"] == "submitUpdate"
    assert x["call"]["args"]["round"] == submit.args["round"]
    assert x["call"]["args"]["numSamples"] == submit.args["numSamples"]
    assert x["call_cids"]["updateDigest"] == digest_to_cid(bytes(submit.args["updateDigest"]))
    assert x["events"][0]["name"] == "UpdateSubmitted"

    created_tx = get(explorer_run, f"/api/task/{explorer_run.task}")["config"]["created_tx"]
    creation = get(explorer_run, f"/api/tx/{created_tx}")
    assert creation["created"] == explorer_run.task and creation["call"]["function"] == "constructor"
    assert creation["call"]["args"]["config"]["numRounds"] == EXPLORER_ROUNDS
    assert [e["name"] for e in creation["events"]] == [
        "RoleGranted",
        "TaskConfigured",
        "PrivacyConfigured",
        "LimitsConfigured",
    ]

    b = get(explorer_run, f"/api/block/{receipt['blockNumber']}")
    block = w3.eth.get_block(receipt["blockNumber"])
    assert b["hash"] == "0x" + bytes(block["hash"]).hex() and b["tx_count"] == len(block["transactions"])
    assert b["timestamp"] == block["timestamp"] and b["gas_used"] == block["gasUsed"]
    assert submit.tx_hash in [t["hash"] for t in b["transactions"]]

    device = submit.args["device"]
    a = get(explorer_run, f"/api/address/{device}")
    assert a["kind"] == "device"
    mine = [e for e in chain["events"] if e.name == "UpdateSubmitted" and e.args["device"] == device]
    assert len(a["updates"]) == len(mine)
    (history,) = a["device_tasks"]
    assert history["task"] == explorer_run.task and history["submitted"] == len(mine)
    assert a["transaction_count"] == w3.eth.get_transaction_count(device)

    # The lying aggregator's page: its commitments, reveals and faults; one of its reveals as a transaction.
    liar = get(explorer_run, f"/api/address/{explorer_run.liar}")
    assert liar["kind"] == "aggregator"
    (mine,) = liar["aggregator_tasks"]
    client = TaskClient(w3, explorer_run.task)
    assert mine["task"] == explorer_run.task and mine["faults"] == client.aggregator_info(explorer_run.liar).faults
    assert {e["verdict"] for e in mine["rounds"]} <= {"faulted", "not-revealed"}
    revealed = next(e for e in mine["rounds"] if e["reveal_tx"])
    x = get(explorer_run, f"/api/tx/{revealed['reveal_tx']}")
    assert x["call"]["function"] == "revealResult" and x["from"] == explorer_run.liar
    assert "ResultRevealed" in [e["name"] for e in x["events"]]
    assert any(
        rel["kind"] in ("reveal", "late reveal") and rel["aggregator"] == explorer_run.liar for rel in x["related"]
    )
    with IpfsClient(explorer_run.state.ipfs_api) as ipfs:
        lie = get(explorer_run, f"/api/ipfs/{revealed['model_cid']}")
        assert lie["type"] == "safetensors" and lie["size"] == len(ipfs.cat(revealed["model_cid"]))
        assert {"revealed_model"} == {ref["kind"] for ref in lie["references"]}

    r1 = get(explorer_run, f"/api/task/{explorer_run.task}/round/1")
    with IpfsClient(explorer_run.state.ipfs_api) as ipfs:
        report = get(explorer_run, f"/api/ipfs/{r1['report_cid']}")
        assert report["type"] == "json" and report["json"] == json.loads(ipfs.cat(r1["report_cid"]))
        assert {"kind": "report", "what": "aggregation report", "task": explorer_run.task, "round": 1} in report[
            "references"
        ]
        model = get(explorer_run, f"/api/ipfs/{r1['model_cid']}")
        assert model["type"] == "safetensors" and model["size"] == len(ipfs.cat(r1["model_cid"]))
        raw = httpx.get(f"{explorer_run.url}/ipfs/{r1['model_cid']}/raw", timeout=30)
        assert raw.status_code == 200 and raw.content == ipfs.cat(r1["model_cid"])


def test_search_resolves_every_kind_and_explains_failures(explorer_run: ExplorerRun, chain: dict) -> None:
    submit = next(e for e in chain["events"] if e.name == "UpdateSubmitted")
    r2 = get(explorer_run, f"/api/task/{explorer_run.task}/round/2")
    block_hash = "0x" + bytes(chain["w3"].eth.get_block(submit.block_number)["hash"]).hex()
    cases = {
        explorer_run.task: f"/task/{explorer_run.task}",
        explorer_run.task.lower(): f"/task/{explorer_run.task}",
        submit.args["device"]: f"/address/{submit.args['device']}",
        submit.tx_hash: f"/tx/{submit.tx_hash}",
        str(submit.block_number): f"/block/{submit.block_number}",
        block_hash: f"/block/{submit.block_number}",
        r2["model_cid"]: f"/ipfs/{r2['model_cid']}",
        f"{explorer_run.task}/2": f"/task/{explorer_run.task}/round/2",
    }
    for query, url in cases.items():
        assert get(explorer_run, f"/api/search?q={query}")["url"] == url, query
    assert "Nothing to search for" in get(explorer_run, "/api/search?q=hello", 400)["error"]
    assert "hex digits" in get(explorer_run, "/api/search?q=0x1234", 400)["error"]
    assert "No transaction, block" in get(explorer_run, "/api/search?q=0x" + "ab" * 32, 404)["error"]
    assert "no block 99999" in get(explorer_run, "/api/search?q=99999", 404)["error"]
    assert "round 9" in get(explorer_run, f"/api/search?q={explorer_run.task}/9", 404)["error"]
    # Malformed paths are 400s and unknown things 404s, with a message: never a 500.
    assert "not an address" in get(explorer_run, "/api/task/nonsense", 400)["error"]
    get(explorer_run, "/api/task/0x" + "00" * 19 + "01", 404)
    get(explorer_run, f"/api/task/{explorer_run.task}/round/abc", 400)
    get(explorer_run, "/api/tx/0x1234", 400)
    assert "no transaction" in get(explorer_run, "/api/tx/0x" + "cd" * 32, 404)["error"]
    get(explorer_run, "/api/ipfs/QmNotACid", 400)
    get(explorer_run, "/api/nowhere", 404)


def test_live_feed_reports_new_blocks(explorer_run: ExplorerRun, chain: dict) -> None:
    last = get(explorer_run, "/api/live/poll")["last"]
    w3 = chain["w3"]
    sender = devnet_account(11)
    tx = {
        "to": devnet_account(10).address,
        "value": 1,
        "gas": 21_000,
        "nonce": w3.eth.get_transaction_count(sender.address),
        "chainId": w3.eth.chain_id,
        "maxFeePerGas": 10 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction))
    head = w3.eth.block_number
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        events = get(explorer_run, f"/api/live/poll?after={last}")["events"]
        if any(e["kind"] == "block" and e["data"]["number"] == head for e in events):
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the new block never reached the live feed")
    with httpx.stream("GET", explorer_run.url + "/api/live?after=0", timeout=10) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in stream.iter_lines():
            lines.append(line)
            if line.startswith("event: block"):
                break
    assert "event: block" in lines


def test_cli_status_rounds_and_report(explorer_run: ExplorerRun, tmp_path: Path) -> None:
    cli = Cli(explorer_run.state, tmp_path)
    index = ["--index", str(tmp_path / "cli-index.sqlite")]
    rounds = json.loads(cli.run("rounds", "--task", explorer_run.task, "--json", *index, *cli.endpoints()).stdout)
    assert rounds == get(explorer_run, f"/api/task/{explorer_run.task}/rounds")
    table = cli.run("rounds", "--task", explorer_run.task, *index, *cli.endpoints()).stdout
    assert rounds[0]["model_cid"] in table and "committed" in table
    status = cli.run("status", *index, *cli.endpoints()).stdout
    assert explorer_run.task in status and "1337" in status
    png, page = tmp_path / "report.png", tmp_path / "report.html"
    cli.run("report", "--task", explorer_run.task, "--out", str(png), *index, *cli.endpoints())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cli.run("report", "--task", explorer_run.task, "--out", str(page), *index, *cli.endpoints())
    text = page.read_text()
    assert text.count("<svg") == 3 and rounds[-1]["model_cid"] in text
    assert "<script" not in text and "<link" not in text and "src=" not in text  # self-contained
    with pytest.raises(AssertionError, match="no FederatedTask"):
        cli.run("rounds", "--task", "0x" + "00" * 19 + "01", *index, *cli.endpoints())


def test_explorer_on_anvil_follows_a_task_as_it_is_created(tmp_path: Path) -> None:
    net = Devnet(tmp_path / "anvil", "anvil", num_accounts=6)
    state = net.start()
    explorer = None
    try:
        explorer, url = start_explorer(state, tmp_path, tmp_path / "index.sqlite")
        task = Cli(state, tmp_path).deploy("--rounds", "2", "--devices", "2")["task"]
        wait_explorer_synced(url, state.rpc_url)
        t = httpx.get(f"{url}/api/task/{task}", timeout=10).json()
        assert t["phase"] == "open" and t["current_round"] == 1
        assert {p["address"] for p in t["participants"] if p["role"] == "device"} == {
            devnet_account(2).address,
            devnet_account(3).address,
        }
        assert [r["state"] for r in t["rounds"]] == ["open"]
        overview = httpx.get(f"{url}/api/overview", timeout=10).json()
        assert overview["chain"]["chain_id"] == 31337 and overview["chain"]["client_version"].startswith("anvil")
    finally:
        if explorer is not None:
            terminate(explorer)
        net.stop()


def test_demo_with_explorer_keeps_it_up_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "fedchain.cli", "demo", "--devices", "2", "--rounds", "1", "--chain", "anvil"),
            *("--explorer", "--explorer-port", str(port), "--json", "--workdir", str(tmp_path / "demo")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True),
        threading.Thread(target=lambda: err.extend(proc.stderr or []), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        # The explorer is up while the demo runs...
        deadline = time.monotonic() + 120
        while not any("explorer: http" in line for line in err):
            assert proc.poll() is None, "".join(err)[-3000:]
            assert time.monotonic() < deadline, "the demo never printed the explorer's URL"
            time.sleep(0.2)
        assert httpx.get(f"{url}/api/health", timeout=5).status_code == 200
        # ...and after it: the summary is printed, and the explorer stays up until Ctrl-C (SIGTERM here).
        deadline = time.monotonic() + 240
        while not out:
            assert proc.poll() is None, "".join(err)[-3000:]
            assert time.monotonic() < deadline, "the demo did not finish in time"
            time.sleep(0.5)
        summary = json.loads(out[-1])
        assert summary["explorer_url"] == url + "/"
        time.sleep(1.0)
        assert proc.poll() is None, "the demo exited instead of keeping the explorer up"
        wait_explorer_synced(url, json.loads((tmp_path / "demo" / "devnet.json").read_text())["rpc_url"])
        task = httpx.get(f"{url}/api/task/{summary['task']}", timeout=5).json()
        assert task["phase"] == "finished" and task["rounds"][0]["model_cid"] == summary["final_model_cid"]
        assert task["rounds"][0]["accuracy"] is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, "".join(err)[-3000:]
    finally:
        terminate(proc)  # type: ignore[arg-type]
    assert any("explorer still up" in line for line in err)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/api/health", timeout=2)
