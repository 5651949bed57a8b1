{
	"patcher": {
		"fileversion": 1,
		"appversion": {
			"major": 8,
			"minor": 6,
			"revision": 0,
			"architecture": "x64",
			"modernui": 1
		},
		"classnamespace": "box",
		"rect": [ 40.0, 80.0, 1340.0, 1000.0 ],
		"openinpresentation": 0,
		"default_fontsize": 12.0,
		"default_fontface": 0,
		"default_fontname": "Arial",
		"gridonopen": 1,
		"gridsize": [ 15.0, 15.0 ],
		"gridsnaponopen": 1,
		"toolbarvisible": 1,
		"description": "Continuo: OSC controls for continuo-bridge and a chunk player",
		"tags": "continuo osc",
		"boxes": [
			{
				"box": {
					"id": "obj-1",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 20.0, 10.0, 500.0, 20.0 ],
					"text": "Continuo: continue a clip from Max",
					"fontface": 1
				}
			},
			{
				"box": {
					"id": "obj-2",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 20.0, 32.0, 1060.0, 48.0 ],
					"text": "Start the server (continuo serve --clip-root FOLDER), then the bridge with replies to this patch and an absolute chunk folder:  continuo-bridge --osc-port 9000 --reply 127.0.0.1:9001 --out /absolute/folder/for/chunks --no-audio . This patch sends OSC to port 9000 and listens on 9001. Click the speaker (ezdac~) at the bottom to turn audio on.",
					"linecount": 3
				}
			},
			{
				"box": {
					"id": "obj-3",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 20.0, 898.0, 166.0, 22.0 ],
					"text": "udpsend 127.0.0.1 9000"
				}
			},
			{
				"box": {
					"id": "obj-4",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 195.0, 898.0, 420.0, 20.0 ],
					"text": "every message to the bridge goes out here (OSC over UDP to port 9000)"
				}
			},
			{
				"box": {
					"id": "obj-5",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 20.0, 90.0, 560.0, 20.0 ],
					"text": "1 · GENERATE  clip (a path under the server's --clip-root), tempo (BPM), bars",
					"fontface": 1
				}
			},
			{
				"box": {
					"id": "obj-6",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 20.0, 110.0, 480.0, 20.0 ],
					"text": "type the clip path (Enter generates) or drop an audio file on the grey box"
				}
			},
			{
				"box": {
					"id": "obj-7",
					"maxclass": "textedit",
					"numinlets": 1,
					"numoutlets": 4,
					"patching_rect": [ 20.0, 134.0, 300.0, 22.0 ],
					"outlettype": [ "", "int", "", "" ],
					"keymode": 1,
					"lines": 1,
					"parameter_enable": 0,
					"text": "prompt.wav"
				}
			},
			{
				"box": {
					"id": "obj-8",
					"maxclass": "dropfile",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 330.0, 130.0, 90.0, 30.0 ],
					"outlettype": [ "", "" ],
					"types": []
				}
			},
			{
				"box": {
					"id": "obj-9",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 424.0, 136.0, 90.0, 20.0 ],
					"text": "← drop a file"
				}
			},
			{
				"box": {
					"id": "obj-10",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 330.0, 170.0, 173.0, 22.0 ],
					"outlettype": [ "", "int" ],
					"text": "conformpath native boot"
				}
			},
			{
				"box": {
					"id": "obj-11",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 330.0, 200.0, 89.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "prepend set"
				}
			},
			{
				"box": {
					"id": "obj-12",
					"maxclass": "button",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 520.0, 134.0, 24.0, 24.0 ],
					"outlettype": [ "bang" ],
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-13",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 548.0, 136.0, 70.0, 20.0 ],
					"text": "Generate"
				}
			},
			{
				"box": {
					"id": "obj-14",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 20.0, 170.0, 50.0, 20.0 ],
					"text": "tempo"
				}
			},
			{
				"box": {
					"id": "obj-15",
					"maxclass": "flonum",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 20.0, 190.0, 60.0, 22.0 ],
					"outlettype": [ "", "bang" ],
					"format": 6,
					"minimum": 20.0,
					"maximum": 999.0,
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-16",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 90.0, 170.0, 50.0, 20.0 ],
					"text": "bars"
				}
			},
			{
				"box": {
					"id": "obj-17",
					"maxclass": "number",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 90.0, 190.0, 60.0, 22.0 ],
					"outlettype": [ "", "bang" ],
					"minimum": 1,
					"maximum": 10000,
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-18",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 20.0, 230.0, 90.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "loadmess set 120."
				}
			},
			{
				"box": {
					"id": "obj-19",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 120.0, 230.0, 80.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "loadmess set 4"
				}
			},
			{
				"box": {
					"id": "obj-20",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 2,
					"patching_rect": [ 20.0, 270.0, 82.0, 22.0 ],
					"outlettype": [ "", "" ],
					"text": "route text"
				}
			},
			{
				"box": {
					"id": "obj-21",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 20.0, 300.0, 68.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "tosymbol"
				}
			},
			{
				"box": {
					"id": "obj-22",
					"maxclass": "newobj",
					"numinlets": 3,
					"numoutlets": 1,
					"patching_rect": [ 20.0, 330.0, 103.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "pack s 120. 4"
				}
			},
			{
				"box": {
					"id": "obj-23",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 130.0, 330.0, 440.0, 20.0 ],
					"text": "pack s f i: clip symbol, tempo float, bars int (initial values 120. and 4)"
				}
			},
			{
				"box": {
					"id": "obj-24",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 20.0, 360.0, 203.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "/continuo/generate $1 $2 $3"
				}
			},
			{
				"box": {
					"id": "obj-25",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 3,
					"patching_rect": [ 250.0, 360.0, 96.0, 22.0 ],
					"outlettype": [ "", "float", "int" ],
					"text": "unpack s f i"
				}
			},
			{
				"box": {
					"id": "obj-26",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 340.0, 360.0, 300.0, 20.0 ],
					"text": "(the job's tempo also goes to the player's clock)"
				}
			},
			{
				"box": {
					"id": "obj-27",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 20.0, 400.0, 140.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "/continuo/tempo $1"
				}
			},
			{
				"box": {
					"id": "obj-28",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 150.0, 400.0, 440.0, 20.0 ],
					"text": "changing tempo also sends /continuo/tempo (it applies to the next generate)"
				}
			},
			{
				"box": {
					"id": "obj-29",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 20.0, 440.0, 200.0, 20.0 ],
					"text": "2 · TRANSPORT",
					"fontface": 1
				}
			},
			{
				"box": {
					"id": "obj-30",
					"maxclass": "button",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 20.0, 462.0, 24.0, 24.0 ],
					"outlettype": [ "bang" ],
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-31",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 46.0, 464.0, 40.0, 20.0 ],
					"text": "Stop"
				}
			},
			{
				"box": {
					"id": "obj-32",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 20.0, 492.0, 47.0, 22.0 ],
					"outlettype": [ "bang", "bang" ],
					"text": "t b b"
				}
			},
			{
				"box": {
					"id": "obj-33",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 20.0, 522.0, 112.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "/continuo/stop"
				}
			},
			{
				"box": {
					"id": "obj-34",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 130.0, 522.0, 166.0, 22.0 ],
					"text": "s continuo-player-stop"
				}
			},
			{
				"box": {
					"id": "obj-35",
					"maxclass": "button",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 190.0, 462.0, 24.0, 24.0 ],
					"outlettype": [ "bang" ],
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-36",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 216.0, 464.0, 50.0, 20.0 ],
					"text": "Status"
				}
			},
			{
				"box": {
					"id": "obj-37",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 190.0, 492.0, 126.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "/continuo/status"
				}
			},
			{
				"box": {
					"id": "obj-38",
					"maxclass": "toggle",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 330.0, 462.0, 24.0, 24.0 ],
					"outlettype": [ "int" ],
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-39",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 356.0, 464.0, 140.0, 20.0 ],
					"text": "Loop (next generate)"
				}
			},
			{
				"box": {
					"id": "obj-40",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 330.0, 492.0, 133.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "/continuo/loop $1"
				}
			},
			{
				"box": {
					"id": "obj-41",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 620.0, 90.0, 480.0, 20.0 ],
					"text": "3 · LIVE PARAMETERS of the running job (shown values are display only until moved)",
					"fontface": 1
				}
			},
			{
				"box": {
					"id": "obj-42",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 620.0, 115.0, 130.0, 20.0 ],
					"text": "temperature (0–5)"
				}
			},
			{
				"box": {
					"id": "obj-43",
					"maxclass": "flonum",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 750.0, 115.0, 60.0, 22.0 ],
					"outlettype": [ "", "bang" ],
					"format": 6,
					"minimum": 0.0,
					"maximum": 5.0,
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-44",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 1090.0, 115.0, 110.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "loadmess set 0.8"
				}
			},
			{
				"box": {
					"id": "obj-45",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 820.0, 115.0, 224.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "/continuo/param temperature $1"
				}
			},
			{
				"box": {
					"id": "obj-46",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 620.0, 149.0, 130.0, 20.0 ],
					"text": "top_k (0–1000)"
				}
			},
			{
				"box": {
					"id": "obj-47",
					"maxclass": "number",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 750.0, 149.0, 60.0, 22.0 ],
					"outlettype": [ "", "bang" ],
					"minimum": 0,
					"maximum": 1000,
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-48",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 1090.0, 149.0, 110.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "loadmess set 50"
				}
			},
			{
				"box": {
					"id": "obj-49",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 820.0, 149.0, 182.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "/continuo/param top_k $1"
				}
			},
			{
				"box": {
					"id": "obj-50",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 620.0, 183.0, 130.0, 20.0 ],
					"text": "top_p (0–1)"
				}
			},
			{
				"box": {
					"id": "obj-51",
					"maxclass": "flonum",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 750.0, 183.0, 60.0, 22.0 ],
					"outlettype": [ "", "bang" ],
					"format": 6,
					"minimum": 0.0,
					"maximum": 1.0,
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-52",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 1090.0, 183.0, 110.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "loadmess set 0.9"
				}
			},
			{
				"box": {
					"id": "obj-53",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 820.0, 183.0, 182.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "/continuo/param top_p $1"
				}
			},
			{
				"box": {
					"id": "obj-54",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 620.0, 217.0, 130.0, 20.0 ],
					"text": "variation (0–1)"
				}
			},
			{
				"box": {
					"id": "obj-55",
					"maxclass": "flonum",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 750.0, 217.0, 60.0, 22.0 ],
					"outlettype": [ "", "bang" ],
					"format": 6,
					"minimum": 0.0,
					"maximum": 1.0,
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-56",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 1090.0, 217.0, 110.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "loadmess set 0.5"
				}
			},
			{
				"box": {
					"id": "obj-57",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 820.0, 217.0, 210.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "/continuo/param variation $1"
				}
			},
			{
				"box": {
					"id": "obj-58",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 620.0, 260.0, 420.0, 20.0 ],
					"text": "4 · PRESET (files in presets/; edit the name for your own)",
					"fontface": 1
				}
			},
			{
				"box": {
					"id": "obj-59",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 620.0, 284.0, 168.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "/continuo/preset piano"
				}
			},
			{
				"box": {
					"id": "obj-60",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 810.0, 284.0, 189.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "/continuo/preset realtime"
				}
			},
			{
				"box": {
					"id": "obj-61",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 620.0, 330.0, 560.0, 34.0 ],
					"text": "5 · REPLIES from the bridge (it must run with --reply 127.0.0.1:9001); all of them also go to the Max console as 'continuo: ...'",
					"linecount": 2,
					"fontface": 1
				}
			},
			{
				"box": {
					"id": "obj-62",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 620.0, 370.0, 117.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "udpreceive 9001"
				}
			},
			{
				"box": {
					"id": "obj-63",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 760.0, 370.0, 110.0, 22.0 ],
					"text": "print continuo"
				}
			},
			{
				"box": {
					"id": "obj-64",
					"maxclass": "newobj",
					"numinlets": 5,
					"numoutlets": 5,
					"patching_rect": [ 620.0, 400.0, 470.0, 22.0 ],
					"outlettype": [ "", "", "", "", "" ],
					"text": "route /continuo/chunk /continuo/done /continuo/status /continuo/error"
				}
			},
			{
				"box": {
					"id": "obj-65",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 620.0, 440.0, 89.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "prepend set"
				}
			},
			{
				"box": {
					"id": "obj-66",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 720.0, 440.0, 380.0, 22.0 ],
					"outlettype": [ "" ],
					"text": ""
				}
			},
			{
				"box": {
					"id": "obj-67",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 1110.0, 440.0, 210.0, 20.0 ],
					"text": "chunk: wav_path bar beat index"
				}
			},
			{
				"box": {
					"id": "obj-68",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 620.0, 470.0, 89.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "prepend set"
				}
			},
			{
				"box": {
					"id": "obj-69",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 720.0, 470.0, 380.0, 22.0 ],
					"outlettype": [ "" ],
					"text": ""
				}
			},
			{
				"box": {
					"id": "obj-70",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 1110.0, 470.0, 210.0, 20.0 ],
					"text": "done: job reason recording"
				}
			},
			{
				"box": {
					"id": "obj-71",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 620.0, 500.0, 89.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "prepend set"
				}
			},
			{
				"box": {
					"id": "obj-72",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 720.0, 500.0, 380.0, 22.0 ],
					"outlettype": [ "" ],
					"text": ""
				}
			},
			{
				"box": {
					"id": "obj-73",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 1110.0, 500.0, 210.0, 20.0 ],
					"text": "status: state job tempo loop"
				}
			},
			{
				"box": {
					"id": "obj-74",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 620.0, 530.0, 89.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "prepend set"
				}
			},
			{
				"box": {
					"id": "obj-75",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 720.0, 530.0, 380.0, 22.0 ],
					"outlettype": [ "" ],
					"text": ""
				}
			},
			{
				"box": {
					"id": "obj-76",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 1110.0, 530.0, 210.0, 20.0 ],
					"text": "error: message"
				}
			},
			{
				"box": {
					"id": "obj-77",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 20.0, 940.0, 1060.0, 48.0 ],
					"text": "8 · PLAYER  each /continuo/chunk WAV goes into one of four buffers (chunk index mod 4) and starts at its place in the music: (bar × quarters per bar + beat) × 60000 / tempo ms after chunk 0 arrived, plus a latency. The server sends chunks up to 1 s early, so a chunk that played on arrival would cut the one before.",
					"linecount": 3,
					"fontface": 1
				}
			},
			{
				"box": {
					"id": "obj-78",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 4,
					"patching_rect": [ 20.0, 1000.0, 110.0, 22.0 ],
					"outlettype": [ "", "int", "float", "int" ],
					"text": "unpack s i f i"
				}
			},
			{
				"box": {
					"id": "obj-79",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 300.0, 1030.0, 47.0, 22.0 ],
					"outlettype": [ "int", "int" ],
					"text": "t i i"
				}
			},
			{
				"box": {
					"id": "obj-80",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 2,
					"patching_rect": [ 360.0, 1060.0, 47.0, 22.0 ],
					"outlettype": [ "bang", "" ],
					"text": "sel 0"
				}
			},
			{
				"box": {
					"id": "obj-81",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 2,
					"patching_rect": [ 360.0, 1120.0, 47.0, 22.0 ],
					"outlettype": [ "float", "" ],
					"text": "timer"
				}
			},
			{
				"box": {
					"id": "obj-82",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 300.0, 1060.0, 33.0, 22.0 ],
					"outlettype": [ "int" ],
					"text": "% 4"
				}
			},
			{
				"box": {
					"id": "obj-83",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 300.0, 1210.0, 30.0, 22.0 ],
					"outlettype": [ "int" ],
					"text": "i"
				}
			},
			{
				"box": {
					"id": "obj-84",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 20.0, 1030.0, 47.0, 22.0 ],
					"outlettype": [ "bang", "" ],
					"text": "t b s"
				}
			},
			{
				"box": {
					"id": "obj-85",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 20.0, 1060.0, 47.0, 22.0 ],
					"outlettype": [ "bang", "bang" ],
					"text": "t b b"
				}
			},
			{
				"box": {
					"id": "obj-86",
					"maxclass": "newobj",
					"numinlets": 6,
					"numoutlets": 1,
					"patching_rect": [ 20.0, 1150.0, 330.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "expr ($i2 * $f5 + $f3) * 60000. / $f4 + $f6 - $f1"
				}
			},
			{
				"box": {
					"id": "obj-87",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 2,
					"patching_rect": [ 20.0, 1180.0, 82.0, 22.0 ],
					"outlettype": [ "float", "int" ],
					"text": "maximum 0."
				}
			},
			{
				"box": {
					"id": "obj-88",
					"maxclass": "newobj",
					"numinlets": 3,
					"numoutlets": 1,
					"patching_rect": [ 20.0, 1240.0, 89.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "pack 0 0. s"
				}
			},
			{
				"box": {
					"id": "obj-89",
					"maxclass": "newobj",
					"numinlets": 5,
					"numoutlets": 5,
					"patching_rect": [ 20.0, 1270.0, 420.0, 22.0 ],
					"outlettype": [ "", "", "", "", "" ],
					"text": "route 0 1 2 3"
				}
			},
			{
				"box": {
					"id": "obj-90",
					"maxclass": "newobj",
					"numinlets": 0,
					"numoutlets": 1,
					"patching_rect": [ 860.0, 1024.0, 166.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "r continuo-player-stop"
				}
			},
			{
				"box": {
					"id": "obj-91",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 860.0, 1000.0, 340.0, 20.0 ],
					"text": "Stop (section 2) cancels what is scheduled and what plays"
				}
			},
			{
				"box": {
					"id": "obj-92",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 860.0, 1054.0, 42.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "stop"
				}
			},
			{
				"box": {
					"id": "obj-93",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 460.0, 1000.0, 260.0, 20.0 ],
					"text": "quarters per bar (4/4: 4, 3/4: 3, 6/8: 3)"
				}
			},
			{
				"box": {
					"id": "obj-94",
					"maxclass": "flonum",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 460.0, 1024.0, 60.0, 22.0 ],
					"outlettype": [ "", "bang" ],
					"format": 6,
					"minimum": 1.0,
					"maximum": 64.0,
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-95",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 740.0, 1000.0, 90.0, 20.0 ],
					"text": "latency ms"
				}
			},
			{
				"box": {
					"id": "obj-96",
					"maxclass": "number",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 740.0, 1024.0, 60.0, 22.0 ],
					"outlettype": [ "", "bang" ],
					"minimum": 0,
					"maximum": 5000,
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-97",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 460.0, 1054.0, 80.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "loadmess 4."
				}
			},
			{
				"box": {
					"id": "obj-98",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 740.0, 1054.0, 90.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "loadmess 100"
				}
			},
			{
				"box": {
					"id": "obj-99",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 560.0, 1054.0, 90.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "loadmess 120."
				}
			},
			{
				"box": {
					"id": "obj-100",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 20.0, 1470.0, 54.0, 22.0 ],
					"outlettype": [ "signal" ],
					"text": "*~ 0.8"
				}
			},
			{
				"box": {
					"id": "obj-101",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 120.0, 1450.0, 60.0, 20.0 ],
					"text": "volume"
				}
			},
			{
				"box": {
					"id": "obj-102",
					"maxclass": "flonum",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 120.0, 1470.0, 60.0, 22.0 ],
					"outlettype": [ "", "bang" ],
					"format": 6,
					"minimum": 0.0,
					"maximum": 1.0,
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-103",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"patching_rect": [ 190.0, 1470.0, 90.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "loadmess set 0.8"
				}
			},
			{
				"box": {
					"id": "obj-104",
					"maxclass": "ezdac~",
					"numinlets": 2,
					"numoutlets": 0,
					"patching_rect": [ 20.0, 1510.0, 45.0, 45.0 ]
				}
			},
			{
				"box": {
					"id": "obj-105",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 72.0, 1525.0, 100.0, 20.0 ],
					"text": "audio on/off"
				}
			},
			{
				"box": {
					"id": "obj-106",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 20.0, 1310.0, 89.0, 22.0 ],
					"outlettype": [ "float", "" ],
					"text": "unpack 0. s"
				}
			},
			{
				"box": {
					"id": "obj-107",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 80.0, 1340.0, 84.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "replace $1"
				}
			},
			{
				"box": {
					"id": "obj-108",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 60.0, 1370.0, 138.0, 22.0 ],
					"outlettype": [ "float", "bang" ],
					"text": "buffer~ continuo-a"
				}
			},
			{
				"box": {
					"id": "obj-109",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 20.0, 1340.0, 47.0, 22.0 ],
					"outlettype": [ "bang" ],
					"text": "delay"
				}
			},
			{
				"box": {
					"id": "obj-110",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 20.0, 1400.0, 63.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "start 0"
				}
			},
			{
				"box": {
					"id": "obj-111",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 20.0, 1430.0, 124.0, 22.0 ],
					"outlettype": [ "signal", "bang" ],
					"text": "play~ continuo-a"
				}
			},
			{
				"box": {
					"id": "obj-112",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 170.0, 1310.0, 89.0, 22.0 ],
					"outlettype": [ "float", "" ],
					"text": "unpack 0. s"
				}
			},
			{
				"box": {
					"id": "obj-113",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 230.0, 1340.0, 84.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "replace $1"
				}
			},
			{
				"box": {
					"id": "obj-114",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 210.0, 1370.0, 138.0, 22.0 ],
					"outlettype": [ "float", "bang" ],
					"text": "buffer~ continuo-b"
				}
			},
			{
				"box": {
					"id": "obj-115",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 170.0, 1340.0, 47.0, 22.0 ],
					"outlettype": [ "bang" ],
					"text": "delay"
				}
			},
			{
				"box": {
					"id": "obj-116",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 170.0, 1400.0, 63.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "start 0"
				}
			},
			{
				"box": {
					"id": "obj-117",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 170.0, 1430.0, 124.0, 22.0 ],
					"outlettype": [ "signal", "bang" ],
					"text": "play~ continuo-b"
				}
			},
			{
				"box": {
					"id": "obj-118",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 320.0, 1310.0, 89.0, 22.0 ],
					"outlettype": [ "float", "" ],
					"text": "unpack 0. s"
				}
			},
			{
				"box": {
					"id": "obj-119",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 380.0, 1340.0, 84.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "replace $1"
				}
			},
			{
				"box": {
					"id": "obj-120",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 360.0, 1370.0, 138.0, 22.0 ],
					"outlettype": [ "float", "bang" ],
					"text": "buffer~ continuo-c"
				}
			},
			{
				"box": {
					"id": "obj-121",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 320.0, 1340.0, 47.0, 22.0 ],
					"outlettype": [ "bang" ],
					"text": "delay"
				}
			},
			{
				"box": {
					"id": "obj-122",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 320.0, 1400.0, 63.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "start 0"
				}
			},
			{
				"box": {
					"id": "obj-123",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 320.0, 1430.0, 124.0, 22.0 ],
					"outlettype": [ "signal", "bang" ],
					"text": "play~ continuo-c"
				}
			},
			{
				"box": {
					"id": "obj-124",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 470.0, 1310.0, 89.0, 22.0 ],
					"outlettype": [ "float", "" ],
					"text": "unpack 0. s"
				}
			},
			{
				"box": {
					"id": "obj-125",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 530.0, 1340.0, 84.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "replace $1"
				}
			},
			{
				"box": {
					"id": "obj-126",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 510.0, 1370.0, 138.0, 22.0 ],
					"outlettype": [ "float", "bang" ],
					"text": "buffer~ continuo-d"
				}
			},
			{
				"box": {
					"id": "obj-127",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 470.0, 1340.0, 47.0, 22.0 ],
					"outlettype": [ "bang" ],
					"text": "delay"
				}
			},
			{
				"box": {
					"id": "obj-128",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"patching_rect": [ 470.0, 1400.0, 63.0, 22.0 ],
					"outlettype": [ "" ],
					"text": "start 0"
				}
			},
			{
				"box": {
					"id": "obj-129",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 2,
					"patching_rect": [ 470.0, 1430.0, 124.0, 22.0 ],
					"outlettype": [ "signal", "bang" ],
					"text": "play~ continuo-d"
				}
			},
			{
				"box": {
					"id": "obj-130",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 20.0, 560.0, 580.0, 34.0 ],
					"text": "6 · MIDI LEARN  click a parameter, then move a knob or fader on the bridge's MIDI port (continuo-bridge --midi): that CC controls it from then on",
					"linecount": 2,
					"fontface": 1
				}
			},
			{
				"box": {
					"id": "obj-131",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 20.0, 600.0, 202.0, 22.0 ],
					"text": "/continuo/learn temperature"
				}
			},
			{
				"box": {
					"id": "obj-132",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 240.0, 600.0, 157.0, 22.0 ],
					"text": "/continuo/learn top_k"
				}
			},
			{
				"box": {
					"id": "obj-133",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 20.0, 630.0, 157.0, 22.0 ],
					"text": "/continuo/learn top_p"
				}
			},
			{
				"box": {
					"id": "obj-134",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 240.0, 630.0, 187.0, 22.0 ],
					"text": "/continuo/learn variation"
				}
			},
			{
				"box": {
					"id": "obj-135",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 20.0, 668.0, 580.0, 34.0 ],
					"text": "7 · LIVE LOOP  continue the last bars of the bridge's audio input (continuo-bridge --input) or of the WAV file your DAW is writing, in loop mode until Stop",
					"linecount": 2,
					"fontface": 1
				}
			},
			{
				"box": {
					"id": "obj-136",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 20.0, 708.0, 40.0, 20.0 ],
					"text": "bars"
				}
			},
			{
				"box": {
					"id": "obj-137",
					"maxclass": "number",
					"numinlets": 1,
					"numoutlets": 2,
					"outlettype": [ "", "bang" ],
					"patching_rect": [ 60.0, 708.0, 50.0, 22.0 ],
					"minimum": 1,
					"maximum": 64,
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-138",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 120.0, 708.0, 80.0, 22.0 ],
					"text": "loadmess set 4"
				}
			},
			{
				"box": {
					"id": "obj-139",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 210.0, 708.0, 380.0, 20.0 ],
					"text": "(1–64) the input, or the file typed below (Enter captures)"
				}
			},
			{
				"box": {
					"id": "obj-140",
					"maxclass": "button",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [ "bang" ],
					"patching_rect": [ 20.0, 738.0, 24.0, 24.0 ],
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-141",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 46.0, 740.0, 100.0, 20.0 ],
					"text": "Capture input"
				}
			},
			{
				"box": {
					"id": "obj-142",
					"maxclass": "textedit",
					"numinlets": 1,
					"numoutlets": 4,
					"outlettype": [ "", "int", "", "" ],
					"patching_rect": [ 200.0, 738.0, 260.0, 22.0 ],
					"text": "/path/of/the/daw/take.wav",
					"keymode": 1,
					"lines": 1,
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-143",
					"maxclass": "button",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [ "bang" ],
					"patching_rect": [ 470.0, 738.0, 24.0, 24.0 ],
					"parameter_enable": 0
				}
			},
			{
				"box": {
					"id": "obj-144",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 496.0, 740.0, 90.0, 20.0 ],
					"text": "Capture file"
				}
			},
			{
				"box": {
					"id": "obj-145",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [ "int" ],
					"patching_rect": [ 20.0, 768.0, 30.0, 22.0 ],
					"text": "i"
				}
			},
			{
				"box": {
					"id": "obj-146",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 20.0, 798.0, 150.0, 22.0 ],
					"text": "/continuo/capture $1"
				}
			},
			{
				"box": {
					"id": "obj-147",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 2,
					"outlettype": [ "", "" ],
					"patching_rect": [ 200.0, 768.0, 82.0, 22.0 ],
					"text": "route text"
				}
			},
			{
				"box": {
					"id": "obj-148",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 200.0, 798.0, 68.0, 22.0 ],
					"text": "tosymbol"
				}
			},
			{
				"box": {
					"id": "obj-149",
					"maxclass": "newobj",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 200.0, 828.0, 75.0, 22.0 ],
					"text": "pack s 4"
				}
			},
			{
				"box": {
					"id": "obj-150",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 285.0, 828.0, 300.0, 20.0 ],
					"text": "pack s i: the file, then the bars (initial 4)"
				}
			},
			{
				"box": {
					"id": "obj-151",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 200.0, 858.0, 170.0, 22.0 ],
					"text": "/continuo/capture $2 $1"
				}
			},
			{
				"box": {
					"id": "obj-152",
					"maxclass": "newobj",
					"numinlets": 4,
					"numoutlets": 4,
					"outlettype": [ "", "", "", "" ],
					"patching_rect": [ 620.0, 560.0, 410.0, 22.0 ],
					"text": "route /continuo/playing /continuo/played /continuo/learned"
				}
			},
			{
				"box": {
					"id": "obj-153",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 620.0, 590.0, 89.0, 22.0 ],
					"text": "prepend set"
				}
			},
			{
				"box": {
					"id": "obj-154",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 720.0, 590.0, 300.0, 22.0 ],
					"text": ""
				}
			},
			{
				"box": {
					"id": "obj-155",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 1030.0, 590.0, 290.0, 20.0 ],
					"text": "playing: job trigger_to_sound_s clock_beat"
				}
			},
			{
				"box": {
					"id": "obj-156",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 620.0, 620.0, 89.0, 22.0 ],
					"text": "prepend set"
				}
			},
			{
				"box": {
					"id": "obj-157",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 720.0, 620.0, 300.0, 22.0 ],
					"text": ""
				}
			},
			{
				"box": {
					"id": "obj-158",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 1030.0, 620.0, 290.0, 34.0 ],
					"text": "played: job chunks late_samples max_start_error_ms timed_chunks underflows",
					"linecount": 2
				}
			},
			{
				"box": {
					"id": "obj-159",
					"maxclass": "newobj",
					"numinlets": 1,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 620.0, 664.0, 89.0, 22.0 ],
					"text": "prepend set"
				}
			},
			{
				"box": {
					"id": "obj-160",
					"maxclass": "message",
					"numinlets": 2,
					"numoutlets": 1,
					"outlettype": [ "" ],
					"patching_rect": [ 720.0, 664.0, 300.0, 22.0 ],
					"text": ""
				}
			},
			{
				"box": {
					"id": "obj-161",
					"maxclass": "comment",
					"numinlets": 1,
					"numoutlets": 0,
					"patching_rect": [ 1030.0, 664.0, 290.0, 20.0 ],
					"text": "learned: param cc"
				}
			}
		],
		"lines": [
			{
				"patchline": {
					"source": [ "obj-8", 0 ],
					"destination": [ "obj-10", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-10", 0 ],
					"destination": [ "obj-11", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-11", 0 ],
					"destination": [ "obj-7", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-12", 0 ],
					"destination": [ "obj-7", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-18", 0 ],
					"destination": [ "obj-15", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-19", 0 ],
					"destination": [ "obj-17", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-7", 0 ],
					"destination": [ "obj-20", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-20", 0 ],
					"destination": [ "obj-21", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-21", 0 ],
					"destination": [ "obj-22", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-15", 0 ],
					"destination": [ "obj-22", 1 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-17", 0 ],
					"destination": [ "obj-22", 2 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-22", 0 ],
					"destination": [ "obj-24", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-24", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-22", 0 ],
					"destination": [ "obj-25", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-15", 0 ],
					"destination": [ "obj-27", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-27", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-30", 0 ],
					"destination": [ "obj-32", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-32", 1 ],
					"destination": [ "obj-34", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-32", 0 ],
					"destination": [ "obj-33", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-33", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-35", 0 ],
					"destination": [ "obj-37", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-37", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-38", 0 ],
					"destination": [ "obj-40", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-40", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-44", 0 ],
					"destination": [ "obj-43", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-43", 0 ],
					"destination": [ "obj-45", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-45", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-48", 0 ],
					"destination": [ "obj-47", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-47", 0 ],
					"destination": [ "obj-49", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-49", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-52", 0 ],
					"destination": [ "obj-51", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-51", 0 ],
					"destination": [ "obj-53", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-53", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-56", 0 ],
					"destination": [ "obj-55", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-55", 0 ],
					"destination": [ "obj-57", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-57", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-59", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-60", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-62", 0 ],
					"destination": [ "obj-63", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-62", 0 ],
					"destination": [ "obj-64", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-64", 0 ],
					"destination": [ "obj-65", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-65", 0 ],
					"destination": [ "obj-66", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-64", 1 ],
					"destination": [ "obj-68", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-68", 0 ],
					"destination": [ "obj-69", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-64", 2 ],
					"destination": [ "obj-71", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-71", 0 ],
					"destination": [ "obj-72", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-64", 3 ],
					"destination": [ "obj-74", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-74", 0 ],
					"destination": [ "obj-75", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-64", 0 ],
					"destination": [ "obj-78", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-78", 3 ],
					"destination": [ "obj-79", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-79", 1 ],
					"destination": [ "obj-80", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-80", 0 ],
					"destination": [ "obj-81", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-79", 0 ],
					"destination": [ "obj-82", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-82", 0 ],
					"destination": [ "obj-83", 1 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-78", 0 ],
					"destination": [ "obj-84", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-78", 1 ],
					"destination": [ "obj-86", 1 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-78", 2 ],
					"destination": [ "obj-86", 2 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-25", 1 ],
					"destination": [ "obj-86", 3 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-84", 1 ],
					"destination": [ "obj-88", 2 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-84", 0 ],
					"destination": [ "obj-85", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-85", 1 ],
					"destination": [ "obj-81", 1 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-81", 0 ],
					"destination": [ "obj-86", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-86", 0 ],
					"destination": [ "obj-87", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-87", 0 ],
					"destination": [ "obj-88", 1 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-85", 0 ],
					"destination": [ "obj-83", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-83", 0 ],
					"destination": [ "obj-88", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-88", 0 ],
					"destination": [ "obj-89", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-90", 0 ],
					"destination": [ "obj-92", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-97", 0 ],
					"destination": [ "obj-94", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-98", 0 ],
					"destination": [ "obj-96", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-99", 0 ],
					"destination": [ "obj-86", 3 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-94", 0 ],
					"destination": [ "obj-86", 4 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-96", 0 ],
					"destination": [ "obj-86", 5 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-103", 0 ],
					"destination": [ "obj-102", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-102", 0 ],
					"destination": [ "obj-100", 1 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-100", 0 ],
					"destination": [ "obj-104", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-100", 0 ],
					"destination": [ "obj-104", 1 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-89", 0 ],
					"destination": [ "obj-106", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-106", 1 ],
					"destination": [ "obj-107", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-107", 0 ],
					"destination": [ "obj-108", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-106", 0 ],
					"destination": [ "obj-109", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-109", 0 ],
					"destination": [ "obj-110", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-110", 0 ],
					"destination": [ "obj-111", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-111", 0 ],
					"destination": [ "obj-100", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-92", 0 ],
					"destination": [ "obj-109", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-92", 0 ],
					"destination": [ "obj-111", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-89", 1 ],
					"destination": [ "obj-112", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-112", 1 ],
					"destination": [ "obj-113", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-113", 0 ],
					"destination": [ "obj-114", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-112", 0 ],
					"destination": [ "obj-115", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-115", 0 ],
					"destination": [ "obj-116", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-116", 0 ],
					"destination": [ "obj-117", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-117", 0 ],
					"destination": [ "obj-100", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-92", 0 ],
					"destination": [ "obj-115", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-92", 0 ],
					"destination": [ "obj-117", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-89", 2 ],
					"destination": [ "obj-118", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-118", 1 ],
					"destination": [ "obj-119", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-119", 0 ],
					"destination": [ "obj-120", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-118", 0 ],
					"destination": [ "obj-121", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-121", 0 ],
					"destination": [ "obj-122", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-122", 0 ],
					"destination": [ "obj-123", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-123", 0 ],
					"destination": [ "obj-100", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-92", 0 ],
					"destination": [ "obj-121", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-92", 0 ],
					"destination": [ "obj-123", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-89", 3 ],
					"destination": [ "obj-124", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-124", 1 ],
					"destination": [ "obj-125", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-125", 0 ],
					"destination": [ "obj-126", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-124", 0 ],
					"destination": [ "obj-127", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-127", 0 ],
					"destination": [ "obj-128", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-128", 0 ],
					"destination": [ "obj-129", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-129", 0 ],
					"destination": [ "obj-100", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-92", 0 ],
					"destination": [ "obj-127", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-92", 0 ],
					"destination": [ "obj-129", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-131", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-132", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-133", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-134", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-138", 0 ],
					"destination": [ "obj-137", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-137", 0 ],
					"destination": [ "obj-145", 1 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-137", 0 ],
					"destination": [ "obj-149", 1 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-140", 0 ],
					"destination": [ "obj-145", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-145", 0 ],
					"destination": [ "obj-146", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-146", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-143", 0 ],
					"destination": [ "obj-142", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-142", 0 ],
					"destination": [ "obj-147", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-147", 0 ],
					"destination": [ "obj-148", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-148", 0 ],
					"destination": [ "obj-149", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-149", 0 ],
					"destination": [ "obj-151", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-151", 0 ],
					"destination": [ "obj-3", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-64", 4 ],
					"destination": [ "obj-152", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-152", 0 ],
					"destination": [ "obj-153", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-153", 0 ],
					"destination": [ "obj-154", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-152", 1 ],
					"destination": [ "obj-156", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-156", 0 ],
					"destination": [ "obj-157", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-152", 2 ],
					"destination": [ "obj-159", 0 ]
				}
			},
			{
				"patchline": {
					"source": [ "obj-159", 0 ],
					"destination": [ "obj-160", 0 ]
				}
			}
		]
	}
}
