// The whole fleet, live: drivers coloured by status, zones, open bookings, supply and demand per H3 cell.
import { useCallback, useEffect, useRef, useState } from "react";
import L from "leaflet";
import { cellToBoundary, latLngToCell } from "h3-js";
import { bearer, client, fmtDuration, isBookingNotice, ok, reason, useNotifications } from "../api.js";
import { STATUS_COLOUR, pin, useLeaflet, zoneLayer } from "../Map.jsx";

const ACTIVE = new Set(["assigned", "driver_arrived", "picked_up"]);
const OPEN = new Set(["requested", "offered", ...ACTIVE]);
const HEAT_RES = 7;

/** @typedef {import("../api.js").Booking} Booking */
/** A booking as the map knows it: read from the API, or first heard of from the socket. */
/** @typedef {Partial<Booking> & Pick<Booking, "booking_id" | "status" | "version">} Shown */
/** @typedef {{ lat?: number | null, lon?: number | null, status: string, speed_mps?: number | null, ts?: string, marker?: L.CircleMarker }} Dot */
/** @typedef {{ drivers: L.LayerGroup, zones: L.LayerGroup, heat: L.LayerGroup, focus: L.LayerGroup }} Layers */
/**
 * @typedef {{ kind: "driver", id: string, status?: string, speed?: number | null, ts?: string, pings?: number, error?: string }
 *   | ({ kind: "booking" } & Partial<Booking>)} Detail
 */

/** @param {{ session: import("../api.js").Session, center: string | null }} props */
export default function Dispatcher({ session, center }) {
  const token = session.token;
  const drivers = useRef(/** @type {Map<string, Dot>} */ (new Map()));
  const [bookings, setBookings] = useState(() => /** @type {Map<string, Shown>} */ (new Map()));
  const [selected, setSelected] = useState(/** @type {{ kind: "driver" | "booking", id: string } | null} */ (null));
  const [counts, setCounts] = useState({ online: 0, busy: 0, offline: 0 });
  const [error, setError] = useState(/** @type {string | null} */ (null));
  const [mapRef, map] = useLeaflet(() => {}, center);
  const layers = useRef(/** @type {Layers | null} */ (null));

  const select = useCallback(
    /** @param {"driver" | "booking"} kind @param {string} id */
    (kind, id) => setSelected({ kind, id }),
    [],
  );

  const place = useCallback(
    /** @param {string} id @param {Partial<Dot>} patch */
    (id, patch) => {
      if (!layers.current) return;
      const d = { ...(drivers.current.get(id) ?? { status: "online" }), ...patch };
      if (d.lat == null || d.lon == null) return;
      if (!d.marker) {
        d.marker = L.circleMarker([d.lat, d.lon], { radius: 5, weight: 1, color: "#0f172a", fillOpacity: 0.9, className: `driver driver-${id}` })
          .bindTooltip(id)
          .on("click", () => select("driver", id))
          .addTo(layers.current.drivers);
      }
      d.marker.setLatLng([d.lat, d.lon]);
      d.marker.setStyle({ fillColor: STATUS_COLOUR[d.status] ?? STATUS_COLOUR.online });
      drivers.current.set(id, d);
    },
    [select],
  );

  const placeFleet = useCallback(
    /** @param {import("../api.js").Schemas["DriverState"][]} fleet */
    (fleet) => {
      for (const d of fleet) place(d.driver_id, { lat: d.lat, lon: d.lon, status: d.status ?? "online" });
    },
    [place],
  );

  useEffect(() => {
    if (!map) return undefined;
    // A new map (the page's ?center= changed) starts without markers: ones kept from the old map
    // were moved there, never shown, and blocked new ones for the same drivers.
    drivers.current = new Map();
    layers.current = {
      drivers: L.layerGroup().addTo(map),
      zones: L.layerGroup().addTo(map),
      heat: L.layerGroup().addTo(map),
      focus: L.layerGroup().addTo(map),
    };
    const auth = { headers: bearer(token) };
    Promise.all([
      ok(client.GET("/v1/drivers", auth)),
      ok(client.GET("/v1/zones", auth)),
      ok(client.GET("/v1/bookings", { ...auth, params: { query: { limit: 100 } } })),
    ])
      .then(([fleet, zones, page]) => {
        placeFleet(fleet);
        // Behind what is already drawn: drivers placed just above share the overlay's SVG, and a
        // zone drawn after them covered their markers and took their clicks (a CI failure).
        const { zones: zoneGroup } = /** @type {Layers} */ (layers.current);
        for (const z of zones) zoneLayer(z).addTo(zoneGroup).bringToBack();
        setBookings((prev) => {
          const next = new Map(prev);
          for (const b of page.items) if (!next.has(b.booking_id)) next.set(b.booking_id, b);
          return next;
        });
      })
      .catch((e) => setError(reason(e)));
    return undefined;
  }, [map, token, placeFleet]);

  const connected = useNotifications(token, (msg) => {
    if (msg.type === "driver.location") {
      place(msg.driver_id, { lat: msg.lat, lon: msg.lon, speed_mps: msg.speed_mps, ts: msg.ts });
    } else if (msg.type === "driver.status") {
      // Coming online, going offline: an offline driver stays on the map, greyed.
      place(msg.driver_id, { status: msg.status, ...(msg.lat != null && msg.lon != null ? { lat: msg.lat, lon: msg.lon } : {}) });
    } else if (isBookingNotice(msg)) {
      setBookings((prev) => {
        const old = prev.get(msg.booking_id);
        if (old && old.version >= msg.version) return prev;
        const next = new Map(prev);
        next.set(msg.booking_id, { ...old, ...msg, pickup: msg.pickup ?? old?.pickup ?? null, dropoff: msg.dropoff ?? old?.dropoff ?? null });
        return next;
      });
      if (msg.driver_id) place(msg.driver_id, { status: ACTIVE.has(msg.status) ? "busy" : "online" });
    } else if (msg.type === "eta.update" && msg.lat != null) {
      place(msg.driver_id, { lat: msg.lat, lon: msg.lon, status: "busy" });
    }
  });

  // Locations and status changes are live only (no replay: the next fix supersedes one missed), so a
  // socket that comes back reads where everyone is now, as the map did when it opened.
  const reconnects = useRef(0);
  useEffect(() => {
    if (!connected || reconnects.current++ === 0) return; // the first connection: the map just loaded them
    ok(client.GET("/v1/drivers", { headers: bearer(token) }))
      .then(placeFleet)
      .catch((e) => setError(reason(e)));
  }, [connected, token, placeFleet]);

  // Supply (available drivers) against demand (open bookings) per H3 cell, redrawn every few seconds.
  useEffect(() => {
    const tick = () => {
      if (!layers.current) return;
      /** @type {Map<string, { supply: number, demand: number }>} */
      const cells = new Map();
      /** @param {string} cell @param {"supply" | "demand"} k */
      const bump = (cell, k) => {
        const c = cells.get(cell) ?? { supply: 0, demand: 0 };
        c[k] += 1;
        cells.set(cell, c);
      };
      let online = 0,
        busy = 0,
        offline = 0;
      for (const d of drivers.current.values()) {
        if (d.status === "busy") busy += 1;
        else if (d.status === "offline") offline += 1;
        else {
          online += 1;
          if (d.lat != null && d.lon != null) bump(latLngToCell(d.lat, d.lon, HEAT_RES), "supply");
        }
      }
      for (const b of bookings.values()) if (b.pickup && (b.status === "requested" || b.status === "offered")) bump(latLngToCell(b.pickup.lat, b.pickup.lon, HEAT_RES), "demand");
      layers.current.heat.clearLayers();
      for (const [cell, { supply, demand }] of cells) {
        const short = demand - supply;
        const colour = short > 0 ? "#dc2626" : "#2563eb";
        const opacity = Math.min(0.35, 0.05 + 0.06 * Math.abs(short || supply / 4));
        L.polygon(cellToBoundary(cell), { stroke: false, fillColor: colour, fillOpacity: opacity, interactive: false, className: "heat" })
          .bindTooltip(`${supply} free drivers, ${demand} waiting`)
          .addTo(layers.current.heat);
      }
      setCounts({ online, busy, offline });
    };
    tick();
    const t = setInterval(tick, 3000);
    return () => clearInterval(t);
  }, [bookings]);

  // The selected driver's track, or the selected booking's pickup and dropoff.
  const [detail, setDetail] = useState(/** @type {Detail | null} */ (null));
  useEffect(() => {
    if (!selected || !layers.current) return;
    const { focus } = layers.current;
    focus.clearLayers();
    if (selected.kind === "driver") {
      const d = drivers.current.get(selected.id);
      setDetail({ kind: "driver", id: selected.id, status: d?.status, speed: d?.speed_mps, ts: d?.ts });
      const driver = { kind: /** @type {const} */ ("driver"), id: selected.id };
      ok(client.GET("/v1/drivers/{driver_id}/track", { params: { path: { driver_id: selected.id }, query: { limit: 600, order: "desc" } }, headers: bearer(token) }))
        .then((t) => {
          /** @type {L.LatLngTuple[]} */
          const pts = t.pings.map((p) => [p.lat, p.lon]);
          if (pts.length) L.polyline(pts, { color: "#1d4ed8", weight: 3, className: "track" }).addTo(focus);
          setDetail((x) => ({ ...(x?.kind === "driver" ? x : driver), pings: t.pings.length }));  // the newest 600
        })
        .catch((e) => setDetail((x) => ({ ...(x?.kind === "driver" ? x : driver), error: reason(e) })));
    } else {
      const b = bookings.get(selected.id);
      setDetail({ kind: "booking", ...b });
      if (b?.pickup) pin([b.pickup.lat, b.pickup.lon], "pickup", "#22c55e").addTo(focus);
      if (b?.dropoff) pin([b.dropoff.lat, b.dropoff.lon], "dropoff", "#ef4444").addTo(focus);
    }
  }, [selected, token]); // eslint-disable-line react-hooks/exhaustive-deps

  const open = [...bookings.values()].filter((b) => OPEN.has(b.status)).sort((a, b) => ((a.created_at ?? "") < (b.created_at ?? "") ? 1 : -1));
  /** @type {Record<string, number>} */
  const byState = {};
  for (const b of bookings.values()) byState[b.status] = (byState[b.status] ?? 0) + 1;
  return (
    <div className="flex h-full">
      <div ref={mapRef} className="h-full flex-1" data-testid="map" />
      <aside className="flex w-96 flex-col gap-3 overflow-y-auto bg-white p-3 text-sm">
        <div className="flex gap-2" data-testid="fleet-counts">
          <span className="rounded bg-green-100 px-2">online {counts.online}</span>
          <span className="rounded bg-orange-100 px-2">busy {counts.busy}</span>
          <span className="rounded bg-slate-200 px-2">offline {counts.offline}</span>
          <span className={`ml-auto rounded px-2 ${connected ? "bg-emerald-600 text-white" : "bg-red-600 text-white"}`}>{connected ? "live" : "reconnecting"}</span>
        </div>
        {error && <p className="text-red-600">{error}</p>}
        <div className="text-xs text-slate-600">{Object.entries(byState).map(([k, v]) => `${k} ${v}`).join(" · ")}</div>
        {detail && (
          <div className="rounded border border-indigo-200 bg-indigo-50 p-2" data-testid="detail">
            {detail.kind === "driver" ? (
              <>
                <b>Driver {detail.id}</b> — {detail.status}
                <div>speed {detail.speed != null ? `${(detail.speed * 3.6).toFixed(0)} km/h` : "—"}</div>
                <div>{detail.pings != null ? `${detail.pings} pings of track shown` : detail.error ?? "loading track…"}</div>
              </>
            ) : (
              <>
                <b>Booking {detail.booking_id?.slice(0, 8)}</b> — {detail.status}
                <div>driver {detail.driver_id ?? "—"}</div>
                <div>pickup ETA {fmtDuration(detail.eta_s)}</div>
                {detail.reason && <div>reason: {detail.reason}</div>}
              </>
            )}
          </div>
        )}
        <h2 className="font-semibold">Open bookings ({open.length})</h2>
        <ul className="flex flex-col gap-1" data-testid="open-bookings">
          {open.slice(0, 200).map((b) => (
            <li key={b.booking_id}>
              <button className="w-full rounded px-2 py-1 text-left hover:bg-slate-100" onClick={() => select("booking", b.booking_id)}>
                <span className="font-mono">{b.booking_id.slice(0, 8)}</span> <span className="rounded bg-slate-200 px-1">{b.status}</span>{" "}
                {b.driver_id ?? ""}
              </button>
            </li>
          ))}
        </ul>
      </aside>
    </div>
  );
}
