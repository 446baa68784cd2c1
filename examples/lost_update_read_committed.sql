-- Lost update (P4) at read committed: it happens.
--
-- T1 and T2 both read row 1, then both write it. T2's write waits for T1's
-- lock; when T1 commits, read committed lets T2 go ahead on the new row
-- version, and T1's update (11) is silently overwritten by T2's (12).
create table test (id int primary key, value int);
insert into test (id, value) values (1, 10), (2, 20);

begin; set transaction isolation level read committed; -- T1
begin; set transaction isolation level read committed; -- T2
select value from test where id = 1; -- T1. Shows 10
select value from test where id = 1; -- T2. Shows 10
update test set value = 11 where id = 1; -- T1
update test set value = 12 where id = 1; -- T2, BLOCKS
commit; -- T1. T2 unblocks: UPDATE 1
commit; -- T2
select value from test where id = 1; -- T3. Shows 12: T1's write is lost
