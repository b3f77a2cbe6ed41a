"""Dynamic groups: inventory filters evaluated in SQL through their indexes, the 400s of
malformed filters, and deployments that reach devices joining the group while they are open."""
import pytest
from sqlalchemy import text

from server.database import db
from server.inventory import filters
from server.models import utcnow

NOW = utcnow()

GROUPS = "/api/management/v1/dynamic-groups"
DEPLOYMENTS = "/api/management/v1/deployments"
INVENTORY = "/api/devices/v1/inventory/device/attributes"


def report(client, device, **attributes):
    inventory = [{"name": "device_type", "value": "qemux86-64"},
                 {"name": "artifact_name", "value": "release-0"},
                 *({"name": k, "value": v} for k, v in attributes.items())]
    response = client.put(INVENTORY, json=inventory, headers=device.headers)
    assert response.status_code == 200


@pytest.fixture
def fleet_of(fleet, client):
    """Accepted devices with inventories: name -> device."""
    def make(**inventories) -> dict:
        devices = {}
        for index, (name, attributes) in enumerate(inventories.items()):
            device = fleet.accepted(mac=f"52:54:00:00:01:{index:02x}")
            report(client, device, **attributes)
            devices[name] = device
        return devices
    return make


def members(client, admin, document) -> set[str]:
    response = client.post(GROUPS, json={"name": "g", "filter": document}, headers=admin)
    assert response.status_code == 201, response.json
    ids = client.get(f"{GROUPS}/g/devices", headers=admin).json
    assert client.delete(f"{GROUPS}/g", headers=admin).status_code == 204
    assert response.json["devices"] == len(ids)
    return set(ids)


def test_each_condition_type(client, admin, fleet_of):
    devices = fleet_of(small={"ram_mb": "512", "region": "eu-west", "tags": ["lab", "beta"]},
                       large={"ram_mb": "2048", "region": "us-east", "serial": "X1"},
                       odd={"ram_mb": "lots", "region": "eu-north"},
                       bare={})
    ids = {name: device.id for name, device in devices.items()}

    def where(*conditions) -> set[str]:
        found = members(client, admin, list(conditions))
        return {name for name, device_id in ids.items() if device_id in found}

    assert where({"attribute": "region", "type": "$eq", "value": "eu-west"}) == {"small"}
    # numbers as numbers: 512 < 1000 < 2048, though "512" > "1000" as text; "lots" is no number
    assert where({"attribute": "ram_mb", "type": "$gte", "value": 1000}) == {"large"}
    assert where({"attribute": "ram_mb", "type": "$lt", "value": 1000}) == {"small"}
    assert where({"attribute": "ram_mb", "type": "$eq", "value": 512.0}) == {"small"}
    # text as text, byte by byte: "2048" < "512" < "lots"
    assert where({"attribute": "ram_mb", "type": "$gt", "value": "1000"}) == {"small", "large",
                                                                              "odd"}
    assert where({"attribute": "ram_mb", "type": "$gt", "value": "6"}) == {"odd"}
    assert where({"attribute": "region", "type": "$in",
                  "value": ["eu-west", "eu-north", "ap"]}) == {"small", "odd"}
    assert where({"attribute": "serial", "type": "$exists", "value": True}) == {"large"}
    assert where({"attribute": "serial", "type": "$exists", "value": False}) == {
        "small", "odd", "bare"}
    assert where({"attribute": "tags", "type": "$eq", "value": "beta"}) == {"small"}
    assert where({"attribute": "region", "type": "$gte", "value": "eu"},
                 {"attribute": "ram_mb", "type": "$lte", "value": 600}) == {"small"}
    assert where({"attribute": "device_type", "type": "$eq", "value": "qemux86-64"}) == set(ids)


def test_only_accepted_devices_and_current_inventory(client, admin, fleet, fleet_of):
    devices = fleet_of(one={"ram_mb": "512"})
    document = [{"attribute": "ram_mb", "type": "$lte", "value": 1024}]
    assert members(client, admin, document) == {devices["one"].id}
    report(client, devices["one"], ram_mb="4096")  # the index follows the inventory
    assert members(client, admin, document) == set()
    report(client, devices["one"], ram_mb="1024")
    assert members(client, admin, document) == {devices["one"].id}
    client.put(f"/api/management/v1/devices/{devices['one'].id}/status",
               json={"status": "rejected"}, headers=admin)
    assert members(client, admin, document) == set()


@pytest.mark.parametrize("document, message", [
    ([], "filter must be a list of 1 to 20 conditions"),
    ({"attribute": "a"}, "'filter' must be a list"),
    (["x"], "filter[0] must be an object"),
    ([{"attribute": "a", "type": "$like", "value": "x"}], "filter[0]: type must be one of"),
    ([{"attribute": "", "type": "$eq", "value": "x"}], "filter[0]: attribute must be"),
    ([{"attribute": "a", "type": "$eq", "value": True}], "value must be a string or a number"),
    ([{"attribute": "a", "type": "$eq", "value": None}], "value must be a string or a number"),
    ([{"attribute": "a", "type": "$eq", "value": {"x": 1}}], "value must be a string"),
    ([{"attribute": "a", "type": "$in", "value": "x"}], "$in takes a list"),
    ([{"attribute": "a", "type": "$in", "value": []}], "$in takes a list"),
    ([{"attribute": "a", "type": "$exists", "value": "yes"}], "$exists takes true or false"),
    ([{"attribute": "a", "type": "$eq", "value": 1}, {"attribute": "a", "type": "$eq"}],
     "filter[1]: value must be"),
    ([{"attribute": "a", "type": "$eq", "value": "x", "extra": 1}], "unknown key(s) extra"),
    ([{"attribute": "a", "type": "$eq", "value": "x", "scope": "identity"}], "only scope"),
    ([{"attribute": "a", "type": "$lt", "value": 1e400}], "numbers must be finite"),
])
def test_a_malformed_filter_is_a_clear_400(client, admin, document, message):
    response = client.post(GROUPS, json={"name": "bad", "filter": document}, headers=admin)
    assert response.status_code == 400
    assert message in response.json["error"]
    assert client.get(f"{GROUPS}/bad", headers=admin).status_code == 404


def test_group_names_and_conflicts(client, admin):
    document = [{"attribute": "a", "type": "$exists", "value": True}]
    assert client.post(GROUPS, json={"name": "no spaces", "filter": document},
                       headers=admin).status_code == 400
    assert client.post(GROUPS, json={"name": "g1", "filter": document},
                       headers=admin).status_code == 201
    assert client.post(GROUPS, json={"name": "g1", "filter": document},
                       headers=admin).status_code == 409
    assert [g["name"] for g in client.get(GROUPS, headers=admin).json] == ["g1"]
    assert client.delete(f"{GROUPS}/nope", headers=admin).status_code == 404


@pytest.mark.parametrize("condition, index", [
    ({"attribute": "ram_mb", "type": "$gte", "value": 3800}, "ix_inventory_values_number"),
    ({"attribute": "region", "type": "$eq", "value": "r7"}, "ix_inventory_values_text"),
    ({"attribute": "serial", "type": "$lt", "value": "s100"}, "ix_inventory_values_text"),
    ({"attribute": "serial", "type": "$exists", "value": True}, "ix_inventory_name"),
])
def test_the_filter_runs_through_the_indexes(app, condition, index):
    """The filter is SQL, and each condition an index lookup, over a fleet of 2,000 devices
    with 10 attributes each (statistics gathered, as autovacuum would)."""
    from server.models import Device, InventoryAttribute, InventoryValue

    with app.app_context():
        engine = db.engine(app)
        with engine.begin() as connection:
            ids = [f"device-{n:05d}" for n in range(2000)]
            connection.execute(Device.__table__.insert(), [
                {"id": i, "identity": i, "identity_hash": i, "status": "accepted",
                 "created_at": NOW, "updated_at": NOW} for i in ids])
            attributes = {"ram_mb": lambda n: str(256 * (n % 16)), "region": lambda n: f"r{n % 50}",
                          "serial": lambda n: f"s{n}", **{f"a{k}": lambda n: "x" for k in range(7)}}
            rows = [{"device_id": i, "name": name, "value": make(n)}
                    for n, i in enumerate(ids) for name, make in attributes.items()]
            connection.execute(InventoryAttribute.__table__.insert(), [
                {**row, "updated_at": NOW} for row in rows])
            connection.execute(InventoryValue.__table__.insert(), [
                {**row, "number": filters.number_of(row["value"])} for row in rows])
            connection.execute(text("ANALYZE"))
        query = db.session.query(Device.id).filter(
            filters.matching(filters.parse_filter([condition])))
        statement = query.statement.compile(engine, compile_kwargs={"literal_binds": True})
        explain = "EXPLAIN" if engine.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN"
        plan = "\n".join(str(row) for row in db.session.execute(text(f"{explain} {statement}")))
        db.session.rollback()
    assert index in plan, plan


@pytest.fixture
def deploy_to_group(client, admin, upload):
    upload("app-1.0")
    client.post(GROUPS, json={"name": "big", "filter": [
        {"attribute": "ram_mb", "type": "$gte", "value": 1024}]}, headers=admin)

    def deploy(**options) -> dict:
        response = client.post(DEPLOYMENTS, json={"name": "to big", "artifact_name": "app-1.0",
                                                  "dynamic_group": "big", **options},
                               headers=admin)
        assert response.status_code == 201, response.json
        return response.json
    return deploy


def test_a_device_joining_the_group_gets_the_open_deployment(client, admin, fleet, fleet_of,
                                                             deploy_to_group):
    devices = fleet_of(member={"ram_mb": "2048"}, outsider={"ram_mb": "512"})
    deployment = deploy_to_group()
    assert deployment["device_count"] == 1 and deployment["open_to_joiners"]
    assert deployment["filter"] == [{"attribute": "ram_mb", "type": "$gte", "value": 1024}]
    assert fleet.next(devices["member"]).json["id"] == deployment["id"]
    assert fleet.next(devices["outsider"]).status_code == 204

    report(client, devices["outsider"], ram_mb="1024")  # joins the group
    assert fleet.next(devices["outsider"]).json["id"] == deployment["id"]
    shown = client.get(f"{DEPLOYMENTS}/{deployment['id']}", headers=admin).json
    assert shown["device_count"] == 2

    newcomer = fleet.accepted(mac="52:54:00:00:02:01")
    assert fleet.next(newcomer).status_code == 204
    report(client, newcomer, ram_mb="4096")
    assert fleet.next(newcomer).json["id"] == deployment["id"]
    report(client, newcomer, ram_mb="4096", other="x")  # already in: not added twice
    devices_in = client.get(f"{DEPLOYMENTS}/{deployment['id']}/devices", headers=admin).json
    assert sorted(d["device_id"] for d in devices_in) == sorted(
        [devices["member"].id, devices["outsider"].id, newcomer.id])

    # aborting closes it to joiners too
    client.put(f"{DEPLOYMENTS}/{deployment['id']}/status", json={"status": "aborted"},
               headers=admin)
    late = fleet.accepted(mac="52:54:00:00:02:02")
    report(client, late, ram_mb="4096")
    assert fleet.next(late).status_code == 204


def test_a_device_accepted_into_the_group_joins(client, admin, fleet, fleet_of, deploy_to_group):
    devices = fleet_of(returning={"ram_mb": "2048"})
    device = devices["returning"]
    client.put(f"/api/management/v1/devices/{device.id}/status", json={"status": "rejected"},
               headers=admin)
    deployment = deploy_to_group()
    assert deployment["device_count"] == 0 and deployment["status"] == "pending"
    response = client.put(f"/api/management/v1/devices/{device.id}/status",
                          json={"status": "accepted"}, headers=admin)
    assert response.status_code == 200
    assert fleet.authenticate(device).status_code == 200
    assert fleet.next(device).json["id"] == deployment["id"]


def test_a_fixed_deployment_keeps_its_devices(client, admin, fleet, fleet_of, deploy_to_group):
    devices = fleet_of(member={"ram_mb": "2048"}, outsider={"ram_mb": "512"})
    deployment = deploy_to_group(fixed=True)
    assert not deployment["open_to_joiners"] and deployment["device_count"] == 1
    report(client, devices["outsider"], ram_mb="2048")
    assert fleet.next(devices["outsider"]).status_code == 204
    assert fleet.next(devices["member"]).json["id"] == deployment["id"]


def test_a_finished_dynamic_deployment_stays_open_until_aborted(client, admin, fleet, fleet_of,
                                                                deploy_to_group):
    devices = fleet_of(member={"ram_mb": "2048"})
    deployment = deploy_to_group()
    fleet.next(devices["member"])
    fleet.status(devices["member"], deployment["id"], "success")
    shown = client.get(f"{DEPLOYMENTS}/{deployment['id']}", headers=admin).json
    assert shown["status"] == "finished" and shown["open_to_joiners"]
    newcomer = fleet.accepted(mac="52:54:00:00:02:03")
    report(client, newcomer, ram_mb="2048")
    assert fleet.next(newcomer).json["id"] == deployment["id"]
    fleet.status(newcomer, deployment["id"], "success")
    response = client.put(f"{DEPLOYMENTS}/{deployment['id']}/status",
                          json={"status": "aborted"}, headers=admin)
    assert response.status_code == 200 and not response.json["open_to_joiners"]


def test_deployment_target_errors(client, admin, upload):
    upload("app-1.0")
    body = {"name": "d", "artifact_name": "app-1.0"}
    response = client.post(DEPLOYMENTS, json={**body, "dynamic_group": "nope"}, headers=admin)
    assert response.status_code == 400 and "no dynamic group nope" in response.json["error"]
    response = client.post(DEPLOYMENTS, json={**body, "all_devices": True, "fixed": True},
                           headers=admin)
    assert response.status_code == 400 and "dynamic group only" in response.json["error"]
    response = client.post(DEPLOYMENTS, json={**body, "dynamic_group": "x", "group": "y"},
                           headers=admin)
    assert response.status_code == 400


@pytest.mark.parametrize("expression, condition", [
    ("region=eu-west", {"attribute": "region", "type": "$eq", "value": "eu-west"}),
    ("version=1.0", {"attribute": "version", "type": "$eq", "value": "1.0"}),  # text
    ("ram_mb>=1024", {"attribute": "ram_mb", "type": "$gte", "value": 1024}),  # a number
    ("load < 0.5", {"attribute": "load", "type": "$lt", "value": 0.5}),
    ("built>2026-01-01", {"attribute": "built", "type": "$gt", "value": "2026-01-01"}),
    ("region in eu,us", {"attribute": "region", "type": "$in", "value": ["eu", "us"]}),
    ("serial exists", {"attribute": "serial", "type": "$exists", "value": True}),
    ("serial missing", {"attribute": "serial", "type": "$exists", "value": False}),
])
def test_cli_where_expressions(expression, condition):
    from server.cli import parse_condition

    assert parse_condition(expression) == condition
    filters.parse_filter([condition])  # what the server accepts


def test_cli_where_mistakes_are_one_line():
    import click

    from server.cli import parse_condition

    with pytest.raises(click.ClickException, match="expected NAME=VALUE"):
        parse_condition("ram_mb ~ 3")
