// The whole fleet, live: drivers coloured by status, zones, open bookings, supply and demand per H3 cell.
import { useCallback, useEffect, useRef, useState } from "react";
import L from "leaflet";
import { cellToBoundary, latLngToCell } from "h3-js";
import { api, fmtDuration, useNotifications } from "../api.js";
import { STATUS_COLOUR, pin, useLeaflet, zoneLayer } from "../Map.jsx";

const ACTIVE = new Set(["assigned", "driver_arrived", "picked_up"]);
const OPEN = new Set(["requested", "offered", ...ACTIVE]);
const HEAT_RES = 7;

export default function Dispatcher({ session, center }) {
  const token = session.token;
  const drivers = useRef(new Map()); // id → {lat, lon, status, marker}
  const [bookings, setBookings] = useState(() => new Map());
  const [selected, setSelected] = useState(null); // {kind, id}
  const [counts, setCounts] = useState({ online: 0, busy: 0, offline: 0 });
  const [error, setError] = useState(null);
  const [mapRef, map] = useLeaflet(undefined, center);
  const layers = useRef(null);

  const select = useCallback((kind, id) => setSelected({ kind, id }), []);

  const place = useCallback(
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
    Promise.all([
      api("/v1/drivers", { token }),
      api("/v1/zones", { token }),
      api("/v1/bookings?limit=100", { token }),
    ])
      .then(([fleet, zones, page]) => {
        for (const d of fleet) place(d.driver_id, { lat: d.lat, lon: d.lon, status: d.status ?? "online" });
        // Behind what is already drawn: drivers placed just above share the overlay's SVG, and a
        // zone drawn after them covered their markers and took their clicks (a CI failure).
        for (const z of zones) zoneLayer(z).addTo(layers.current.zones).bringToBack();
        setBookings((prev) => {
          const next = new Map(prev);
          for (const b of page.items) if (!next.has(b.booking_id)) next.set(b.booking_id, b);
          return next;
        });
      })
      .catch((e) => setError(e.message));
    return undefined;
  }, [map, token, place]);

  const connected = useNotifications(token, (msg) => {
    if (msg.type === "driver.location") {
      place(msg.driver_id, { lat: msg.lat, lon: msg.lon, speed_mps: msg.speed_mps, ts: msg.ts });
    } else if (msg.type?.startsWith("booking.")) {
      setBookings((prev) => {
        const old = prev.get(msg.booking_id);
        if (old && old.version >= msg.version) return prev;
        const next = new Map(prev);
        next.set(msg.booking_id, { ...old, ...msg, pickup: msg.pickup ?? old?.pickup, dropoff: msg.dropoff ?? old?.dropoff });
        return next;
      });
      if (msg.driver_id) place(msg.driver_id, { status: ACTIVE.has(msg.status) ? "busy" : "online" });
    } else if (msg.type === "eta.update" && msg.lat != null) {
      place(msg.driver_id, { lat: msg.lat, lon: msg.lon, status: "busy" });
    }
  });

  // Supply (available drivers) against demand (open bookings) per H3 cell, redrawn every few seconds.
  useEffect(() => {
    const tick = () => {
      if (!layers.current) return;
      const cells = new Map();
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
          bump(latLngToCell(d.lat, d.lon, HEAT_RES), "supply");
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
  const [detail, setDetail] = useState(null);
  useEffect(() => {
    if (!selected || !layers.current) return;
    layers.current.focus.clearLayers();
    if (selected.kind === "driver") {
      const d = drivers.current.get(selected.id);
      setDetail({ kind: "driver", id: selected.id, status: d?.status, speed: d?.speed_mps, ts: d?.ts });
      api(`/v1/drivers/${encodeURIComponent(selected.id)}/track?limit=600`, { token })
        .then((t) => {
          const pts = t.pings.map((p) => [p.lat, p.lon]);
          if (pts.length) L.polyline(pts, { color: "#1d4ed8", weight: 3, className: "track" }).addTo(layers.current.focus);
          setDetail((x) => ({ ...x, pings: t.pings.length }));
        })
        .catch((e) => setDetail((x) => ({ ...x, error: e.message })));
    } else {
      const b = bookings.get(selected.id);
      setDetail({ kind: "booking", ...b });
      if (b?.pickup) pin([b.pickup.lat, b.pickup.lon], "pickup", "#22c55e").addTo(layers.current.focus);
      if (b?.dropoff) pin([b.dropoff.lat, b.dropoff.lon], "dropoff", "#ef4444").addTo(layers.current.focus);
    }
  }, [selected, token]); // eslint-disable-line react-hooks/exhaustive-deps

  const open = [...bookings.values()].filter((b) => OPEN.has(b.status)).sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
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
