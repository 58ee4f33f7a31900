"""Dynamic PD role choice: worked by hand on registry snapshots, over a real etcd, and with real instance processes."""
import time

from grserve.service.registry import InstanceInfo
from grserve.service.roles import RolePolicy, next_role

POLICY = RolePolicy(queue_threshold=4, kv_threshold=0.9, cooldown_s=10)
NOW = 1000.0


def inst(name, role, queue=0, rows=0, kv=0.0, changed=0.0, model="m"):
    return InstanceInfo(instance_id=name, address=f"http://{name}", model=model, kinds=["llm"], role=role,
                        queue_depth=queue, running_rows=rows, kv_usage=kv, role_changed=changed)


def test_prefill_backlog_moves_the_least_loaded_decode_instance():
    # prefill: 12 prompts waiting on one instance (pressure 3); decode: idle-ish (pressure 0.25)
    snapshot = [inst("p1", "prefill", queue=12), inst("d1", "decode", queue=1, rows=9),
                inst("d2", "decode", queue=1, rows=3)]
    assert [next_role(i, snapshot, POLICY, NOW) for i in snapshot] == [None, None, "prefill"]


def test_decode_kv_pressure_moves_a_prefill_instance():
    # decode KV 95% full (pressure 1.06); prefills nearly idle
    snapshot = [inst("p1", "prefill", queue=1), inst("p2", "prefill"), inst("d1", "decode", kv=0.95)]
    assert [next_role(i, snapshot, POLICY, NOW) for i in snapshot] == [None, "decode", None]


def test_no_switch_without_clear_imbalance_or_below_one_per_pool():
    both_busy = [inst("p1", "prefill", queue=8), inst("d1", "decode", queue=6), inst("d2", "decode", queue=6)]
    assert all(next_role(i, both_busy, POLICY, NOW) is None for i in both_busy)
    last_decode = [inst("p1", "prefill", queue=40), inst("d1", "decode")]
    assert next_role(last_decode[1], last_decode, POLICY, NOW) is None


def test_cooldown_after_any_switch_and_other_models_and_mixed_instances_stay_out():
    snapshot = [inst("p1", "prefill", queue=12), inst("d1", "decode", changed=NOW - 5), inst("d2", "decode")]
    assert next_role(snapshot[1], snapshot, POLICY, NOW) is None  # d1 switched 5 s ago
    # 11 s after: d1 (equal load, first by id) moves
    assert [next_role(i, snapshot, POLICY, NOW + 6) for i in snapshot] == [None, "prefill", None]
    other_model = [inst("p1", "prefill", queue=12, model="x"), inst("d1", "decode"), inst("d2", "decode")]
    assert next_role(other_model[2], other_model, POLICY, NOW) is None
    assert next_role(inst("m1", "mixed"), snapshot, POLICY, NOW + 60) is None


def test_switchers_over_a_real_etcd_move_exactly_one_instance(registry):
    """Three instances' switchers read the same registry: only the chosen donor switches; once its heartbeat
    writes the new role, the others see the cooldown and stay."""
    from grserve.service.roles import RoleSwitcher
    infos = [inst("p1", "prefill", queue=12), inst("d1", "decode", queue=2), inst("d2", "decode")]
    registrations = [registry.register(i, ttl=5) for i in infos]
    try:
        for r in registrations:
            r.heartbeat()
        switchers = [RoleSwitcher(registry, r, POLICY) for r in registrations]
        decisions = [s() for s in switchers]
        assert [d.get("role") for d in decisions] == [None, None, "prefill"]
        registrations[2].heartbeat(decisions[2])
        roles = {i.instance_id: i.role for i in registry.instances()}
        assert roles == {"p1": "prefill", "d1": "decode", "d2": "prefill"}
        assert [s() for s in switchers] == [{}, {}, {}]
    finally:
        for r in registrations:
            r.stop()


def test_instances_started_with_dynamic_pd_cover_a_prefill_backlog(etcd, llm_dir):
    """Two real decode processes with --dynamic-pd beside a (fake) prefill instance reporting a backlog of 12
    prompts: exactly one of them turns prefill, and the pair stays so."""
    from grserve.service.registry import Registry
    from tests.service.conftest import instance_cpus, start_instance, wait_for
    registry = Registry(etcd.url)  # where `serve --register` writes
    fake = registry.register(InstanceInfo("backlogged-prefill", "http://127.0.0.1:9", llm_dir.name, ["llm"],
                                          role="prefill", queue_depth=12), ttl=5)
    fake.start_heartbeats(lambda: {"queue_depth": 12}, interval=0.5)
    procs = [start_instance(llm_dir, etcd.url, "--role", "decode", "--dynamic-pd", cpus=cpus)
             for cpus in instance_cpus(2)]
    urls = {url.removeprefix("http://") for _, url in procs}

    def roles() -> list[str]:
        return sorted(i.role for i in registry.instances() if i.instance_id in urls)
    try:
        wait_for(lambda: roles() == ["decode", "prefill"], 120, "one decode instance to switch")
        fake.heartbeat({"queue_depth": 12})
        time.sleep(1.5)  # three more heartbeats each: nobody else moves
        assert roles() == ["decode", "prefill"]
    finally:
        fake.stop()
        for proc, _ in procs:
            proc.terminate()
            proc.wait(30)
